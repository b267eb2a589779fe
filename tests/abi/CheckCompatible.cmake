# A release's ABI against an earlier release of the same major version:
# additions are allowed, nothing may be removed or changed. abidiff's exit
# status is a bit set: 1 error, 2 usage error, 4 an ABI change (additions
# alone set only this bit), 8 an incompatible change.
#   -DABIDIFF=<abidiff> -DOLD=<baseline.abi> -DLIB=<libvae.so> -DHEADERS=<include/vae>
execute_process(COMMAND ${ABIDIFF} --headers-dir2 ${HEADERS} ${OLD} ${LIB}
                OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
message("${out}${err}")
if(NOT rc MATCHES "^[0-9]+$" OR rc EQUAL 1 OR rc EQUAL 2 OR rc EQUAL 3 OR rc GREATER 4)
  message(FATAL_ERROR "abidiff status ${rc}: not a compatible extension of ${OLD}")
endif()
if(out MATCHES "[1-9][0-9]* Removed" OR out MATCHES "[1-9][0-9]* Changed")
  message(FATAL_ERROR "functions or variables removed or changed against ${OLD}")
endif()
message(STATUS "a compatible extension of ${OLD}")
