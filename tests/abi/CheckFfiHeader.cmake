# Checks of include/vae/vae_ffi.h, the generated FFI copy of vae.h.
#
#   -DCHECK=current   -DGEN=<VaeFfiHeader.cmake> -DHEADER=<vae.h> -DFFI=<vae_ffi.h>
#                     -DOUT=<scratch file> -DBUILD=<build dir>
#       regenerates the copy from HEADER into OUT and compares it with the
#       committed FFI byte for byte.
#   -DCHECK=functions -DHEADER=<vae.h> -DFFI=<vae_ffi.h>
#       the functions FFI declares are exactly those HEADER declares with
#       VAE_API (as tests/abi/CheckExports.cmake reads them), with the same
#       text once VAE_API is removed and whitespace normalized.
cmake_minimum_required(VERSION 3.20)

if(CHECK STREQUAL "current")
  file(REMOVE "${OUT}")
  execute_process(COMMAND "${CMAKE_COMMAND}" -DIN=${HEADER} -DOUT=${OUT} -P "${GEN}"
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT EXISTS "${OUT}")
    message(FATAL_ERROR "${GEN} failed on ${HEADER}")
  endif()
  file(SHA256 "${OUT}" fresh)
  file(SHA256 "${FFI}" committed)
  if(NOT fresh STREQUAL committed)
    find_program(DIFF diff)
    if(DIFF)
      execute_process(COMMAND "${DIFF}" -u "${FFI}" "${OUT}")
    endif()
    message(FATAL_ERROR "${FFI} is not what ${HEADER} generates (the new text is in "
            "${OUT}): run `cmake --build ${BUILD} --target ffi-header` and commit "
            "include/vae/vae_ffi.h")
  endif()
  message(STATUS "vae_ffi.h is what vae.h generates")
  return()
endif()

if(NOT CHECK STREQUAL "functions")
  message(FATAL_ERROR "CHECK must be current or functions")
endif()

# One space between words, none around ( ) [ ] , *.
macro(normalize in out)
  string(REGEX REPLACE "[ \t\r\n]+" " " ${out} "${${in}}")
  string(REGEX REPLACE " ?([][(),*]) ?" "\\1" ${out} "${${out}}")
  string(STRIP "${${out}}" ${out})
endmacro()

# name -> normalized declaration, from vae.h (VAE_API-marked) ...
file(READ "${HEADER}" h)
string(REGEX MATCHALL "VAE_API[^;(]*[ *]vae_[a-z0-9_]+[ ]*\\([^;]*" decls "${h}")
set(declared "")
foreach(d IN LISTS decls)
  string(REGEX MATCH "[ *](vae_[a-z0-9_]+)[ ]*\\(" _ "${d}")
  set(name ${CMAKE_MATCH_1})
  string(REGEX REPLACE "^VAE_API" "" d "${d}")
  normalize(d sig_${name})
  list(APPEND declared ${name})
endforeach()

# ... and from vae_ffi.h: declarations start at the beginning of a line,
# typedefs aside. The generated banner is its only comment.
file(READ "${FFI}" f)
string(REGEX REPLACE "^/\\*([^*]|\\*+[^*/])*\\*+/" "" f "${f}")
if(f MATCHES "/\\*|//|#|VAE_API")
  message(FATAL_ERROR "${FFI} has comments past its banner, directives or VAE_API")
endif()
string(REGEX MATCHALL "\n[A-Za-z_][^;{}()\n]*[ *]vae_[a-z0-9_]+\\([^;]*" decls "\n${f}")
set(ffi "")
foreach(d IN LISTS decls)
  string(REGEX REPLACE "^\n" "" d "${d}")
  if(d MATCHES "^typedef[ \t]")
    continue()
  endif()
  string(REGEX MATCH "[ *](vae_[a-z0-9_]+)\\(" _ "${d}")
  set(name ${CMAKE_MATCH_1})
  list(FIND ffi ${name} seen)
  if(seen GREATER -1)
    message(FATAL_ERROR "${FFI} declares ${name} twice")
  endif()
  normalize(d ffi_sig_${name})
  list(APPEND ffi ${name})
endforeach()

list(REMOVE_DUPLICATES declared)
list(LENGTH declared n)
if(n LESS 50)
  message(FATAL_ERROR "parsed only ${n} declarations from ${HEADER}")
endif()
set(only_h ${declared})
list(REMOVE_ITEM only_h ${ffi})
set(only_ffi ${ffi})
list(REMOVE_ITEM only_ffi ${declared})
if(only_h OR only_ffi)
  message(FATAL_ERROR "in vae.h but not in vae_ffi.h: ${only_h}\n"
          "in vae_ffi.h but not in vae.h: ${only_ffi}")
endif()
set(differ "")
foreach(name IN LISTS declared)
  if(NOT sig_${name} STREQUAL ffi_sig_${name})
    string(APPEND differ "\n  vae.h:     ${sig_${name}}\n  vae_ffi.h: ${ffi_sig_${name}}")
  endif()
endforeach()
if(differ)
  message(FATAL_ERROR "declarations that differ (spacing normalized):${differ}")
endif()
message(STATUS "${n} functions: vae.h and vae_ffi.h declare the same")
