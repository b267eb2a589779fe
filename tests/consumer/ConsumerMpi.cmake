# ctest driver of the libvae_mpi consumer: installs the built libvae (with
# libvae_mpi) into a fresh prefix, then builds tests/consumer/mpi against
# that prefix only and runs it under mpiexec with 2 ranks.
#   -DMODE=pkgconfig|cmake -DBUILD=<libvae build dir> -DWORK=<scratch dir>
#   -DSRC=<tests/consumer/mpi> -DCC=<C compiler> -DMPIEXEC=<mpiexec>
#   -DMPIEXEC_FLAGS=<flags, ;-separated>
# cmake mode also checks the component's absence: a copy of the prefix
# without libvae_mpi's CMake files (as a libvae built without MPI installs
# it) fails `COMPONENTS mpi` with a message that says why, and gives
# vae_mpi_FOUND false to OPTIONAL_COMPONENTS; an unknown component fails.
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "${cmd}\nfailed (${rc}):\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()

# Configuring must fail, with `needle` in what it says.
function(configure_fails dir prefix find needle)
  execute_process(COMMAND ${CMAKE_COMMAND} -S "${SRC}" -B "${dir}" "-DCMAKE_PREFIX_PATH=${prefix}"
                          "-DCMAKE_C_COMPILER=${CC}" "-DVAE_CONSUMER_FIND=${find}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "${needle}")
    message(FATAL_ERROR "find_package(vae) with ${find} against ${prefix} should fail saying "
                        "\"${needle}\"; it returned ${rc}:\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK}")
set(prefix "${WORK}/prefix")
run(${CMAKE_COMMAND} --install "${BUILD}" --prefix "${prefix}")
foreach(f include/vae/vae_mpi.h)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "the install did not put ${f} under ${prefix}")
  endif()
endforeach()
file(GLOB libdir LIST_DIRECTORIES true "${prefix}/lib*")
file(GLOB sonames "${libdir}/libvae_mpi.so.1")
if(NOT sonames)
  message(FATAL_ERROR "the install has no ${libdir}/libvae_mpi.so.1")
endif()
set(launch ${MPIEXEC} ${MPIEXEC_FLAGS} -np 2)

if(MODE STREQUAL "pkgconfig")
  find_program(PKG_CONFIG pkg-config REQUIRED)
  set(ENV{PKG_CONFIG_PATH} "${libdir}/pkgconfig")
  run(${PKG_CONFIG} --modversion vae-mpi)
  message(STATUS "pkg-config finds vae-mpi ${out}")
  run(${PKG_CONFIG} --atleast-version=1.1 vae-mpi)
  run(${PKG_CONFIG} --cflags --libs vae-mpi)
  separate_arguments(flags UNIX_COMMAND "${out}")
  if(NOT out MATCHES "-lvae_mpi" OR NOT out MATCHES "-lvae( |$)")
    message(FATAL_ERROR "pkg-config --libs vae-mpi lacks -lvae_mpi or -lvae: ${out}")
  endif()
  run(${CC} -std=c11 -Wall -Wextra -Werror "${SRC}/consumer_mpi.c" -o "${WORK}/consumer_mpi"
      ${flags} "-Wl,-rpath,${libdir}")
  run(${launch} "${WORK}/consumer_mpi")
  message(STATUS "${out}")
elseif(MODE STREQUAL "cmake")
  set(b "${WORK}/build")
  run(${CMAKE_COMMAND} -S "${SRC}" -B "${b}" "-DCMAKE_PREFIX_PATH=${prefix}"
      "-DCMAKE_C_COMPILER=${CC}")
  run(${CMAKE_COMMAND} --build "${b}")
  run(${launch} "${b}/consumer_mpi")
  message(STATUS "${out}")
  run(${CMAKE_COMMAND} -S "${SRC}" -B "${WORK}/optional" "-DCMAKE_PREFIX_PATH=${prefix}"
      "-DCMAKE_C_COMPILER=${CC}" -DVAE_CONSUMER_FIND=optional)
  if(NOT out MATCHES "vae_mpi_FOUND=(TRUE|1|ON)")
    message(FATAL_ERROR "OPTIONAL_COMPONENTS mpi did not find the component:\n${out}")
  endif()
  configure_fails("${WORK}/unknown" "${prefix}" unknown
                  "component nonesuch: libvae has no such component")

  # The same prefix as a libvae built without MPI installs it.
  set(nompi "${WORK}/prefix-nompi")
  file(COPY "${prefix}/" DESTINATION "${nompi}")
  file(GLOB_RECURSE mpi_files "${nompi}/*vaeMpiTargets*.cmake" "${nompi}/*vae_mpi*"
                              "${nompi}/*vae-mpi*")
  file(REMOVE ${mpi_files})
  configure_fails("${WORK}/nompi" "${nompi}" required
                  "component mpi: this libvae was installed without libvae_mpi")
  run(${CMAKE_COMMAND} -S "${SRC}" -B "${WORK}/nompi-optional" "-DCMAKE_PREFIX_PATH=${nompi}"
      "-DCMAKE_C_COMPILER=${CC}" -DVAE_CONSUMER_FIND=optional)
  if(NOT out MATCHES "vae_mpi_FOUND=(FALSE|0|OFF)")
    message(FATAL_ERROR "OPTIONAL_COMPONENTS mpi without libvae_mpi:\n${out}")
  endif()
else()
  message(FATAL_ERROR "MODE must be pkgconfig or cmake")
endif()
