# llhttp is compiled from the C sources that Debian's node-llhttp package ships
# (it has no shared library package). They are generated code: built without our -Werror.
set(LLHTTP_SRC_DIR /usr/share/llhttp CACHE PATH "Directory with llhttp's api.c, http.c, llhttp.c")
set(LLHTTP_INCLUDE_DIR /usr/share/include/llhttp CACHE PATH "Directory with llhttp.h")
foreach(f api.c http.c llhttp.c)
  if(NOT EXISTS ${LLHTTP_SRC_DIR}/${f})
    message(FATAL_ERROR "llhttp source ${LLHTTP_SRC_DIR}/${f} not found: install Debian package "
                        "'node-llhttp' (scripts/install-deps does), or set -DLLHTTP_SRC_DIR=...")
  endif()
endforeach()
if(NOT EXISTS ${LLHTTP_INCLUDE_DIR}/llhttp.h)
  message(FATAL_ERROR "llhttp.h not found in ${LLHTTP_INCLUDE_DIR}: install Debian package "
                      "'node-llhttp', or set -DLLHTTP_INCLUDE_DIR=...")
endif()
add_library(llhttp STATIC ${LLHTTP_SRC_DIR}/api.c ${LLHTTP_SRC_DIR}/http.c
                          ${LLHTTP_SRC_DIR}/llhttp.c)
target_include_directories(llhttp SYSTEM PUBLIC ${LLHTTP_INCLUDE_DIR})
target_compile_options(llhttp PRIVATE -w -Wno-error)
set_target_properties(llhttp PROPERTIES POSITION_INDEPENDENT_CODE ON)
