# Shared part of the cross toolchain files (s390x.cmake, i386.cmake), included
# after they set VAE_CROSS_TRIPLET (the compiler's prefix) and
# CMAKE_LIBRARY_ARCHITECTURE (Debian's multiarch directory).
#
# Debian's cross compilers bring the target's C library (/usr/<triplet>); the
# target's OpenBLAS, libgfortran and zlib come from the target's Debian
# packages unpacked into VAE_CROSS_SYSROOT (tests/cross/run.sh does it), not
# installed through multiarch, so the host's packages are never touched.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_C_COMPILER ${VAE_CROSS_TRIPLET}-gcc)

if(NOT VAE_CROSS_SYSROOT AND DEFINED ENV{VAE_CROSS_SYSROOT})
  set(VAE_CROSS_SYSROOT "$ENV{VAE_CROSS_SYSROOT}")
endif()
if(NOT VAE_CROSS_SYSROOT)
  message(FATAL_ERROR "cross build: set VAE_CROSS_SYSROOT to the unpacked target libraries "
                      "(tests/cross/run.sh does)")
endif()
# try_compile projects read this file again: hand them the variable.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES VAE_CROSS_SYSROOT)

set(CMAKE_FIND_ROOT_PATH ${VAE_CROSS_SYSROOT} /usr/${VAE_CROSS_TRIPLET})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config sees the target's .pc files only, never the host's.
set(_lib ${VAE_CROSS_SYSROOT}/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
set(ENV{PKG_CONFIG_LIBDIR} "${_lib}/openblas-pthread/pkgconfig:${_lib}/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${VAE_CROSS_SYSROOT}")
set(ENV{PKG_CONFIG_PATH} "")

# libopenblas.so needs libgfortran.so.5, also in the unpacked tree.
set(_rpath_link "-Wl,-rpath-link,${_lib}:${VAE_CROSS_SYSROOT}/lib/${CMAKE_LIBRARY_ARCHITECTURE}")
set(CMAKE_EXE_LINKER_FLAGS_INIT "${_rpath_link}")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${_rpath_link}")
