# Selects the CBLAS implementation and provides the INTERFACE target vae_blas,
# plus for packaging: VAE_BLAS_PC_REQUIRES / VAE_BLAS_PC_LIBS (vae.pc) and
# VAE_BLAS_LINK_LIBRARIES (absolute paths, for the installed static target).
# VAE_BLAS=OpenBLAS (default) or BLIS. The reference netlib BLAS is never
# picked up by accident: each choice looks for its own library by name and for
# a cblas.h in its own include directory, and configuration stops with a
# message naming the Debian package when it is missing.

set(VAE_BLAS "OpenBLAS" CACHE STRING "CBLAS implementation: OpenBLAS or BLIS")
set_property(CACHE VAE_BLAS PROPERTY STRINGS OpenBLAS BLIS)

find_package(PkgConfig QUIET)

if(VAE_BLAS STREQUAL "OpenBLAS")
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(VAE_OPENBLAS QUIET IMPORTED_TARGET openblas)
  endif()
  if(VAE_OPENBLAS_FOUND)
    add_library(vae_blas INTERFACE)
    target_link_libraries(vae_blas INTERFACE PkgConfig::VAE_OPENBLAS)
    set(VAE_BLAS_PC_REQUIRES "openblas")
    set(VAE_BLAS_PC_LIBS "")
    set(VAE_BLAS_LINK_LIBRARIES ${VAE_OPENBLAS_LINK_LIBRARIES})
  else()
    find_library(VAE_OPENBLAS_LIBRARY NAMES openblas)
    find_path(VAE_OPENBLAS_INCLUDE_DIR cblas.h
              PATH_SUFFIXES openblas openblas-pthread openblas-openmp openblas-serial
              NO_DEFAULT_PATH PATHS /usr/include /usr/local/include
              /usr/include/${CMAKE_LIBRARY_ARCHITECTURE})
    if(NOT VAE_OPENBLAS_LIBRARY OR NOT VAE_OPENBLAS_INCLUDE_DIR)
      message(FATAL_ERROR
        "VAE_BLAS=OpenBLAS but OpenBLAS was not found (library: ${VAE_OPENBLAS_LIBRARY}, "
        "cblas.h: ${VAE_OPENBLAS_INCLUDE_DIR}). Install it (Debian: apt-get install "
        "libopenblas-dev) or choose -DVAE_BLAS=BLIS.")
    endif()
    add_library(vae_blas INTERFACE)
    target_include_directories(vae_blas SYSTEM INTERFACE ${VAE_OPENBLAS_INCLUDE_DIR})
    target_link_libraries(vae_blas INTERFACE ${VAE_OPENBLAS_LIBRARY})
    set(VAE_BLAS_PC_REQUIRES "")
    set(VAE_BLAS_PC_LIBS "-lopenblas")
    set(VAE_BLAS_LINK_LIBRARIES ${VAE_OPENBLAS_LIBRARY})
  endif()
elseif(VAE_BLAS STREQUAL "BLIS")
  find_library(VAE_BLIS_LIBRARY NAMES blis blis-mt)
  find_path(VAE_BLIS_INCLUDE_DIR cblas.h
            PATH_SUFFIXES blis blis-openmp blis-pthread blis-serial
            NO_DEFAULT_PATH PATHS /usr/include /usr/local/include
            /usr/include/${CMAKE_LIBRARY_ARCHITECTURE})
  if(NOT VAE_BLIS_LIBRARY OR NOT VAE_BLIS_INCLUDE_DIR)
    message(FATAL_ERROR
      "VAE_BLAS=BLIS but BLIS was not found (library: ${VAE_BLIS_LIBRARY}, "
      "cblas.h: ${VAE_BLIS_INCLUDE_DIR}). Install it (Debian: apt-get install libblis-dev) "
      "or choose -DVAE_BLAS=OpenBLAS.")
  endif()
  add_library(vae_blas INTERFACE)
  # SYSTEM: BLIS's cblas.h defines unused static functions that -Werror rejects.
  target_include_directories(vae_blas SYSTEM INTERFACE ${VAE_BLIS_INCLUDE_DIR})
  target_link_libraries(vae_blas INTERFACE ${VAE_BLIS_LIBRARY})
  set(VAE_BLAS_PC_REQUIRES "")
  set(VAE_BLAS_PC_LIBS "-lblis")
  set(VAE_BLAS_LINK_LIBRARIES ${VAE_BLIS_LIBRARY})
else()
  message(FATAL_ERROR "VAE_BLAS must be OpenBLAS or BLIS, got '${VAE_BLAS}'")
endif()
message(STATUS "libvae: CBLAS from ${VAE_BLAS}")
