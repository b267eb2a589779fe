# The API reference: `cmake --build <build dir> --target docs` runs doxygen on
# include/vae/vae.h and writes HTML to <build dir>/docs/api/index.html. Any
# doxygen warning (an undocumented symbol or parameter, a malformed command)
# fails the target. Without doxygen the target exists and fails saying so;
# configuring the rest of the project never depends on it.

find_package(Doxygen)

set(VAE_DOCS_OUTPUT "${PROJECT_BINARY_DIR}/docs")

# A parent project may already have a `docs` target; ours is then vae_docs.
if(TARGET docs)
  set(_vae_docs_target vae_docs)
else()
  set(_vae_docs_target docs)
endif()

if(DOXYGEN_FOUND)
  configure_file("${PROJECT_SOURCE_DIR}/docs/Doxyfile.in" "${VAE_DOCS_OUTPUT}/Doxyfile" @ONLY)
  add_custom_target(${_vae_docs_target}
    COMMAND "${DOXYGEN_EXECUTABLE}" "${VAE_DOCS_OUTPUT}/Doxyfile"
    WORKING_DIRECTORY "${VAE_DOCS_OUTPUT}"
    DEPENDS "${PROJECT_SOURCE_DIR}/include/vae/vae.h" "${VAE_DOCS_OUTPUT}/Doxyfile"
    COMMENT "API reference: ${VAE_DOCS_OUTPUT}/api/index.html"
    VERBATIM)
else()
  add_custom_target(${_vae_docs_target}
    COMMAND "${CMAKE_COMMAND}" -E echo
            "docs: doxygen was not found; install it (Debian: apt-get install doxygen)"
            "and run cmake again"
    COMMAND "${CMAKE_COMMAND}" -E false
    VERBATIM)
endif()
unset(_vae_docs_target)
