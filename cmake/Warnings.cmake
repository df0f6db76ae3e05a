# Project-wide warning flags; applied to every tierwall target through
# tierwall_set_warnings() so third-party headers stay untouched.
function(tierwall_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow
    -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
    -Wconversion -Wsign-conversion -Wnull-dereference -Wimplicit-fallthrough)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC 12 reports -Wrestrict false positives inside std::string at -O3
    # (GCC bug 105651); the checks stay on with clang.
    target_compile_options(${target} PRIVATE -Wno-restrict)
    # At -O3 GCC 12 also reports -Wnull-dereference and -Warray-bounds inside
    # inlined libstdc++ (vector and streambuf code of the tests): in
    # optimised builds these stay warnings, not errors; the Debug build
    # (CI's) keeps them as errors.
    target_compile_options(${target} PRIVATE
      $<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:-Wno-error=null-dereference>
      $<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:-Wno-error=array-bounds>)
  endif()
  if(TIERWALL_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# tierwall_library(NAME SOURCES... DEPS ...) — one static library per component,
# public headers under <dir>/include.
function(tierwall_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  tierwall_set_warnings(${name})
endfunction()
