# Writes the FFI copy of the public header: the declarations of vae.h as plain
# C that FFI parsers (LuaJIT's ffi.cdef, Python cffi's cdef, koffi) accept.
#
#   cmake -DIN=include/vae/vae.h -DOUT=include/vae/vae_ffi.h -P cmake/VaeFfiHeader.cmake
#
# (or `cmake --build <dir> --target ffi-header`). Needs nothing but CMake.
#
# What it does, in the order of the C translation phases:
#  - joins lines ending in a backslash, then removes comments (string and
#    character literals are skipped, so "/*" inside one is not a comment);
#  - removes every preprocessor directive. `#ifdef __cplusplus` blocks go with
#    their contents (`extern "C" {` and `}`); the include guard keeps its
#    contents; any other conditional may contain directives only (the
#    VAE_API block), otherwise the script stops: it cannot choose a branch;
#  - turns VAE_VERSION_MAJOR/MINOR/PATCH into one anonymous enum, with
#    VAE_VERSION_NUMBER = MAJOR*10000 + MINOR*100 + PATCH, where they stood;
#  - drops the VAE_API marker;
#  - prints each declaration on its own line (struct and enum bodies one
#    member per line, long function declarations wrapped at 100 columns).
# It stops with an error when a macro defined in the header is still used in
# the output. The same input always gives the same bytes, and OUT is only
# rewritten when its contents change.
cmake_minimum_required(VERSION 3.20)

if(NOT IN OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DIN=include/vae/vae.h -DOUT=<file> -P VaeFfiHeader.cmake")
endif()
if(NOT EXISTS "${IN}")
  message(FATAL_ERROR "VaeFfiHeader: ${IN} does not exist")
endif()

set(_width 100) # wrap function declarations longer than this

# ---- comments ------------------------------------------------------------
# Each comment becomes one space, as in C. Scans from special character to
# special character, so the loop runs once per comment or literal.
function(_vae_strip_comments text out_var)
  set(rest "${text}")
  set(result "")
  while(NOT rest STREQUAL "")
    string(REGEX MATCH "^[^/\"']+" plain "${rest}")
    if(NOT plain STREQUAL "")
      string(LENGTH "${plain}" n)
      string(APPEND result "${plain}")
      string(SUBSTRING "${rest}" ${n} -1 rest)
      continue()
    endif()
    string(SUBSTRING "${rest}" 0 2 head)
    if(head STREQUAL "/*")
      string(SUBSTRING "${rest}" 2 -1 rest)
      string(FIND "${rest}" "*/" end)
      if(end LESS 0)
        message(FATAL_ERROR "VaeFfiHeader: unterminated /* comment in ${IN}")
      endif()
      math(EXPR end "${end} + 2")
      string(SUBSTRING "${rest}" ${end} -1 rest)
      string(APPEND result " ")
    elseif(head STREQUAL "//")
      string(REGEX MATCH "^//[^\n]*" comment "${rest}")
      string(LENGTH "${comment}" n)
      string(SUBSTRING "${rest}" ${n} -1 rest)
      string(APPEND result " ")
    else()
      string(REGEX MATCH "^(\"([^\"\\\\\n]|\\\\.)*\"|'([^'\\\\\n]|\\\\.)*')" literal "${rest}")
      if(literal STREQUAL "")
        string(SUBSTRING "${rest}" 0 1 literal) # a lone / (division) or stray quote
      endif()
      string(LENGTH "${literal}" n)
      string(APPEND result "${literal}")
      string(SUBSTRING "${rest}" ${n} -1 rest)
    endif()
  endwhile()
  set(${out_var} "${result}" PARENT_SCOPE)
endfunction()

# ---- layout ----------------------------------------------------------------
# Splits text at the top-level occurrences of sep ("," or ";"), counting
# (), [] and {} as nesting. Empty pieces are dropped; pieces are stripped.
# The result is a list of _vae_escape'd items.
function(_vae_split text sep out_var)
  set(rest "${text}")
  set(piece "")
  set(pieces "")
  set(depth 0)
  while(NOT rest STREQUAL "")
    string(REGEX MATCH "^[^][(){},;]+" chunk "${rest}")
    if(NOT chunk STREQUAL "")
      string(LENGTH "${chunk}" n)
      string(APPEND piece "${chunk}")
      string(SUBSTRING "${rest}" ${n} -1 rest)
      continue()
    endif()
    string(SUBSTRING "${rest}" 0 1 c)
    string(SUBSTRING "${rest}" 1 -1 rest)
    if(c STREQUAL "(" OR c STREQUAL "[" OR c STREQUAL "{")
      math(EXPR depth "${depth} + 1")
    elseif(c STREQUAL ")" OR c STREQUAL "]" OR c STREQUAL "}")
      math(EXPR depth "${depth} - 1")
    elseif(c STREQUAL sep AND depth EQUAL 0)
      string(STRIP "${piece}" piece)
      if(NOT piece STREQUAL "")
        _vae_escape(piece)
        list(APPEND pieces "${piece}")
      endif()
      set(piece "")
      continue()
    endif()
    string(APPEND piece "${c}")
  endwhile()
  string(STRIP "${piece}" piece)
  if(NOT piece STREQUAL "")
    _vae_escape(piece)
    list(APPEND pieces "${piece}")
  endif()
  set(${out_var} "${pieces}" PARENT_SCOPE)
endfunction()

# Protects the characters CMake lists treat specially ( ; [ ] ), and back.
macro(_vae_escape var)
  string(REPLACE ";" "@VAE_SEMI@" ${var} "${${var}}")
  string(REPLACE "[" "@VAE_LBRACKET@" ${var} "${${var}}")
  string(REPLACE "]" "@VAE_RBRACKET@" ${var} "${${var}}")
endmacro()
macro(_vae_unescape var)
  string(REPLACE "@VAE_SEMI@" ";" ${var} "${${var}}")
  string(REPLACE "@VAE_LBRACKET@" "[" ${var} "${${var}}")
  string(REPLACE "@VAE_RBRACKET@" "]" ${var} "${${var}}")
endmacro()

# One space between tokens; none after ( [ or before ) ] , ; and one after ,.
function(_vae_tidy text out_var)
  string(REGEX REPLACE "[ \t\r\n]+" " " text "${text}")
  string(REGEX REPLACE "([[(]) " "\\1" text "${text}")
  string(REGEX REPLACE " ([]),;)])" "\\1" text "${text}")
  string(REGEX REPLACE ",([^ ])" ", \\1" text "${text}")
  string(STRIP "${text}" text)
  set(${out_var} "${text}" PARENT_SCOPE)
endfunction()

# Position of the last top-level "(" of text (the parameter list of a
# function declaration or of a function pointer typedef), or -1.
function(_vae_last_paren text out_var)
  string(LENGTH "${text}" len)
  set(depth 0)
  set(found -1)
  set(i 0)
  while(i LESS len)
    string(SUBSTRING "${text}" ${i} 1 c)
    if(c STREQUAL "(")
      if(depth EQUAL 0)
        set(found ${i})
      endif()
      math(EXPR depth "${depth} + 1")
    elseif(c STREQUAL ")")
      math(EXPR depth "${depth} - 1")
    endif()
    math(EXPR i "${i} + 1")
  endwhile()
  set(${out_var} ${found} PARENT_SCOPE)
endfunction()

# Formats one declaration (without its final ";") at the given indentation
# and appends its lines to out_var. A body in braces gets one member per
# line; a function declaration longer than _width breaks after commas of its
# parameter list, continuation lines aligned after the "(".
function(_vae_format decl indent out_var)
  set(out "${${out_var}}")
  string(FIND "${decl}" "{" open)
  if(open LESS 0)
    _vae_tidy("${decl}" line)
    string(LENGTH "${indent}${line};" len)
    _vae_last_paren("${line}" p)
    if(len GREATER _width AND p GREATER -1 AND line MATCHES "\\)$")
      math(EXPR p "${p} + 1")
      string(SUBSTRING "${line}" 0 ${p} head)
      string(LENGTH "${line}" len)
      math(EXPR plen "${len} - ${p} - 1")
      string(SUBSTRING "${line}" ${p} ${plen} params)
      string(LENGTH "${indent}${head}" align)
      if(align GREATER 60)
        string(LENGTH "${indent}    " align)
      endif()
      string(REPEAT " " ${align} cont)
      _vae_split("${params}" "," plist)
      set(cur "${indent}${head}")
      set(first TRUE)
      foreach(param IN LISTS plist)
        _vae_unescape(param)
        _vae_tidy("${param}" param)
        if(first)
          string(APPEND cur "${param}")
          set(first FALSE)
          continue()
        endif()
        string(LENGTH "${cur}, ${param});" len) # room for the "," or ");" after it
        if(len GREATER _width)
          string(APPEND out "${cur},\n")
          set(cur "${cont}${param}")
        else()
          string(APPEND cur ", ${param}")
        endif()
      endforeach()
      string(APPEND out "${cur});\n")
    else()
      string(APPEND out "${indent}${line};\n")
    endif()
    set(${out_var} "${out}" PARENT_SCOPE)
    return()
  endif()

  string(FIND "${decl}" "}" close REVERSE)
  string(SUBSTRING "${decl}" 0 ${open} head)
  math(EXPR body_start "${open} + 1")
  math(EXPR body_len "${close} - ${body_start}")
  string(SUBSTRING "${decl}" ${body_start} ${body_len} body)
  math(EXPR tail_start "${close} + 1")
  string(SUBSTRING "${decl}" ${tail_start} -1 tail)
  _vae_tidy("${head}" head)
  _vae_tidy("${tail}" tail)
  if(NOT head MATCHES "(^| )(struct|union|enum)( [A-Za-z_0-9]+)?$")
    message(FATAL_ERROR "VaeFfiHeader: `${head} {` is not a struct, union or enum: an FFI "
            "header holds no function bodies or initializers")
  endif()
  if(head STREQUAL "")
    string(APPEND out "${indent}{\n")
  else()
    string(APPEND out "${indent}${head} {\n")
  endif()
  if(head MATCHES "(^| )enum( |$)")
    _vae_split("${body}" "," members)
    list(LENGTH members n)
    set(i 0)
    foreach(mem IN LISTS members)
      _vae_unescape(mem)
      _vae_tidy("${mem}" mem)
      math(EXPR i "${i} + 1")
      if(i LESS n)
        string(APPEND out "${indent}    ${mem},\n")
      else()
        string(APPEND out "${indent}    ${mem}\n")
      endif()
    endforeach()
  else()
    _vae_split("${body}" ";" members)
    foreach(mem IN LISTS members)
      _vae_unescape(mem)
      _vae_format("${mem}" "${indent}    " out)
    endforeach()
  endif()
  if(tail STREQUAL "")
    string(APPEND out "${indent}};\n")
  else()
    string(APPEND out "${indent}} ${tail};\n")
  endif()
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

# ---- read, splice lines, strip comments -----------------------------------
file(READ "${IN}" src)
string(REPLACE "\r\n" "\n" src "${src}")
string(REGEX REPLACE "\\\\\n" "" src "${src}") # line splicing (phase 2)
_vae_strip_comments("${src}" src)

foreach(part MAJOR MINOR PATCH)
  string(REGEX MATCH "#[ \t]*define[ \t]+VAE_VERSION_${part}[ \t]+([0-9]+)[ \t]*\n" m "${src}")
  if(m STREQUAL "")
    message(FATAL_ERROR "VaeFfiHeader: no `#define VAE_VERSION_${part} <number>` in ${IN}")
  endif()
  math(EXPR v_${part} "${CMAKE_MATCH_1}")
endforeach()
math(EXPR v_NUMBER "${v_MAJOR} * 10000 + ${v_MINOR} * 100 + ${v_PATCH}")
set(version_enum "enum { VAE_VERSION_MAJOR = ${v_MAJOR}, VAE_VERSION_MINOR = ${v_MINOR}, ")
string(APPEND version_enum "VAE_VERSION_PATCH = ${v_PATCH}, VAE_VERSION_NUMBER = ${v_NUMBER} };")

# ---- preprocessor directives ----------------------------------------------
# Lines become list items: escape the characters CMake lists treat specially.
_vae_escape(src)
string(REPLACE "\n" ";" lines "${src}")

# Stack of open conditionals, one item each:
#   guard   the include guard: contents kept
#   cxx     a __cplusplus branch that is compiled as C: contents kept
#   nocxx   a __cplusplus branch only C++ sees: contents dropped
#   other   any other conditional: directives only
#   skip    a conditional inside a dropped branch
set(stack "")
set(code "")
set(macros "")
set(first_directive TRUE)
set(version_done FALSE)
foreach(line IN LISTS lines)
  set(dropping FALSE)
  if("nocxx" IN_LIST stack OR "skip" IN_LIST stack)
    set(dropping TRUE)
  endif()
  set(top "")
  if(stack)
    list(GET stack -1 top)
  endif()

  if(NOT line MATCHES "^[ \t]*#[ \t]*([a-z_]*)(.*)$")
    if(dropping)
      continue()
    endif()
    if(top STREQUAL "other" AND NOT line MATCHES "^[ \t]*$")
      _vae_unescape(line)
      string(STRIP "${line}" line)
      message(FATAL_ERROR "VaeFfiHeader: ${IN}: `${line}` is inside a preprocessor "
              "conditional other than the include guard and __cplusplus: the FFI copy "
              "cannot choose a branch")
    endif()
    string(APPEND code "${line}\n")
    continue()
  endif()
  set(directive "${CMAKE_MATCH_1}")
  string(STRIP "${CMAKE_MATCH_2}" arg)
  set(is_cxx FALSE)
  if(arg MATCHES "^(defined)?[ \t(]*__cplusplus[ \t)]*$")
    set(is_cxx TRUE)
  endif()

  if(directive MATCHES "^if(def|ndef)?$")
    if(dropping)
      list(APPEND stack skip)
    elseif(is_cxx AND directive STREQUAL "ifndef")
      list(APPEND stack cxx)
    elseif(is_cxx)
      list(APPEND stack nocxx)
    elseif(first_directive AND directive STREQUAL "ifndef")
      list(APPEND stack guard)
    else()
      list(APPEND stack other)
    endif()
  elseif(directive MATCHES "^(else|elif|elifdef|elifndef)$")
    if(NOT stack)
      message(FATAL_ERROR "VaeFfiHeader: #${directive} without #if in ${IN}")
    endif()
    if(top STREQUAL "cxx" OR top STREQUAL "nocxx")
      if(NOT directive STREQUAL "else")
        message(FATAL_ERROR "VaeFfiHeader: #${directive} in a __cplusplus conditional of ${IN}")
      endif()
      list(POP_BACK stack)
      if(top STREQUAL "cxx")
        list(APPEND stack nocxx)
      else()
        list(APPEND stack cxx)
      endif()
    elseif(top STREQUAL "guard")
      message(FATAL_ERROR "VaeFfiHeader: #${directive} in the include guard of ${IN}")
    endif()
  elseif(directive STREQUAL "endif")
    if(NOT stack)
      message(FATAL_ERROR "VaeFfiHeader: #endif without #if in ${IN}")
    endif()
    list(POP_BACK stack)
  elseif(directive STREQUAL "define" AND NOT dropping)
    if(arg MATCHES "^([A-Za-z_][A-Za-z_0-9]*)")
      list(APPEND macros ${CMAKE_MATCH_1})
      if(CMAKE_MATCH_1 MATCHES "^VAE_VERSION_(MAJOR|MINOR|PATCH|NUMBER)$" AND NOT version_done)
        string(APPEND code "${version_enum}\n")
        set(version_done TRUE)
      endif()
    endif()
  endif()
  # #include, #undef, #pragma, #error, #line and the null directive: dropped.
  set(first_directive FALSE)
endforeach()
if(stack)
  message(FATAL_ERROR "VaeFfiHeader: unterminated #if in ${IN}")
endif()

_vae_unescape(code)

# ---- VAE_API --------------------------------------------------------------
string(REGEX REPLACE "(^|[^A-Za-z_0-9])VAE_API([^A-Za-z_0-9]|$)" "\\1 \\2" code "${code}")

# ---- declarations, one by one ---------------------------------------------
string(STRIP "${code}" code)
if(NOT code MATCHES ";$")
  message(FATAL_ERROR "VaeFfiHeader: ${IN} ends with text that is not a declaration "
          "ending in \";\" (a function body?)")
endif()
_vae_split("${code}" ";" decls)
set(body "")
set(prev_block FALSE)
set(first TRUE)
foreach(decl IN LISTS decls)
  _vae_unescape(decl)
  set(block FALSE)
  if(decl MATCHES "{")
    set(block TRUE)
  endif()
  # A blank line around every braced declaration and before every typedef
  # (a new type starts a group of functions); other one-liners stay together.
  if(NOT first AND (block OR prev_block OR decl MATCHES "^[ \t\n]*typedef[ \t\n]"))
    string(APPEND body "\n")
  endif()
  _vae_format("${decl}" "" body)
  set(prev_block ${block})
  set(first FALSE)
endforeach()

# ---- checks ---------------------------------------------------------------
if(body MATCHES "#|__attribute__|__declspec|extern \"C\"")
  message(FATAL_ERROR "VaeFfiHeader: the output still has a directive or attribute:\n${body}")
endif()
list(REMOVE_DUPLICATES macros)
list(REMOVE_ITEM macros VAE_VERSION_MAJOR VAE_VERSION_MINOR VAE_VERSION_PATCH
     VAE_VERSION_NUMBER)
foreach(m IN LISTS macros)
  if(body MATCHES "(^|[^A-Za-z_0-9])${m}([^A-Za-z_0-9]|$)")
    message(FATAL_ERROR "VaeFfiHeader: the declarations use the macro ${m}, which an FFI "
            "parser cannot expand: teach cmake/VaeFfiHeader.cmake what it stands for")
  endif()
endforeach()
if(NOT version_done)
  message(FATAL_ERROR "VaeFfiHeader: the version macros were not found in ${IN}")
endif()

# ---- write ----------------------------------------------------------------
get_filename_component(in_name "${IN}" NAME)
set(ver "${v_MAJOR}.${v_MINOR}.${v_PATCH}")
set(text "/*
 * The declarations of ${in_name} (libvae ${ver}) as plain C for FFI parsers: LuaJIT's
 * ffi.cdef, Python cffi's cdef, koffi. No preprocessor directives, no attributes;
 * the consumer provides size_t and the fixed-width integer types of <stdint.h>.
 *
 * Generated from ${in_name} by cmake/VaeFfiHeader.cmake: do not edit. Regenerate with
 *   cmake --build <build-dir> --target ffi-header
 */

${body}")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL text)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${text}")
