# The dynamic symbols libvae_mpi.so exports must be exactly the functions
# vae_mpi.h declares with VAE_MPI_API, and exactly those its version script
# (lib/mpi/libvae_mpi.map) names; its soname carries the major version.
#   -DLIB=<libvae_mpi.so> -DHEADER=<vae_mpi.h> -DMAP=<libvae_mpi.map> -DNM=<nm>
#   -DREADELF=<readelf> -DSONAME=<libvae_mpi.so.N>
execute_process(COMMAND ${NM} -D --defined-only "${LIB}" OUTPUT_VARIABLE nm_out
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nm failed on ${LIB}")
endif()
string(REGEX MATCHALL "[0-9a-f]+ [A-Za-z] [A-Za-z_0-9@.]+" lines "${nm_out}")
set(exported "")
foreach(l IN LISTS lines)
  string(REGEX REPLACE "^[0-9a-f]+ ([A-Za-z]) ([A-Za-z_0-9]+).*$" "\\1;\\2" parts "${l}")
  list(GET parts 0 type)
  list(GET parts 1 name)
  if(NOT type STREQUAL "A") # not the version node itself
    list(APPEND exported ${name})
  endif()
endforeach()

file(READ "${HEADER}" h)
string(REGEX MATCHALL "VAE_MPI_API[^;(]*[ *](vae_mpi_[a-z0-9_]+)[ ]*\\(" decls "${h}")
set(declared "")
foreach(d IN LISTS decls)
  string(REGEX REPLACE ".*[ *](vae_mpi_[a-z0-9_]+)[ ]*\\($" "\\1" name "${d}")
  list(APPEND declared ${name})
endforeach()

file(READ "${MAP}" mp)
string(REGEX MATCHALL "vae_mpi_[a-z0-9_]+" mapped "${mp}")

foreach(list_name exported declared mapped)
  list(REMOVE_DUPLICATES ${list_name})
  list(SORT ${list_name})
endforeach()
list(LENGTH declared n)
if(n LESS 10)
  message(FATAL_ERROR "parsed only ${n} declarations from ${HEADER}")
endif()
foreach(pair "exported;declared" "mapped;declared")
  list(GET pair 0 a)
  list(GET pair 1 b)
  set(only_a ${${a}})
  list(REMOVE_ITEM only_a ${${b}})
  set(only_b ${${b}})
  list(REMOVE_ITEM only_b ${${a}})
  if(only_a OR only_b)
    message(FATAL_ERROR "${a} but not ${b}: ${only_a}\n${b} but not ${a}: ${only_b}")
  endif()
endforeach()

execute_process(COMMAND ${READELF} -d "${LIB}" OUTPUT_VARIABLE dyn RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT dyn MATCHES "Library soname: \\[${SONAME}\\]")
  message(FATAL_ERROR "${LIB} has no soname ${SONAME}:\n${dyn}")
endif()
message(STATUS "${n} functions exported, soname ${SONAME}")
