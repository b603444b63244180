# check_layers.cmake — nothing depends upward (docs/architecture.md, "Folders").
#
#   cmake -DSRC=<source dir> -P check_layers.cmake
#
# Every quoted #include of every C file in the folders below must name a header of the file's
# own folder or of a folder it may depend on, and every header name must be unique across
# those folders (includes are by name). The lists are the table of docs/architecture.md;
# CMake's include paths are wider (a library sees what its dependencies export), so this is
# what keeps, say, runtime/data from reaching into runtime/core's internals.

set(FOLDERS support ir frontend passes codegen driver runtime/abi runtime/core runtime/data
            runtime/caption runtime/cli)
set(MAY_support support)
set(MAY_ir ir support)
set(MAY_frontend frontend ir support)
set(MAY_passes passes ir support)
set(MAY_codegen codegen passes ir support runtime/abi)
set(MAY_driver driver codegen passes frontend ir support runtime/abi)
set(MAY_runtime/abi runtime/abi)
set(MAY_runtime/core runtime/core runtime/abi support)
# datasets use the runtime's status codes (cap.h) and nothing else of it
set(MAY_runtime/data runtime/data support cap.h cap_artifact.h)
set(MAY_runtime/caption runtime/caption runtime/data runtime/core runtime/abi support)
set(MAY_runtime/cli runtime/cli runtime/caption runtime/data runtime/core runtime/abi support)

if(NOT SRC)
  message(FATAL_ERROR "usage: cmake -DSRC=<source dir> -P check_layers.cmake")
endif()

# header name -> its folder
foreach(folder ${FOLDERS})
  file(GLOB headers RELATIVE ${SRC}/${folder} ${SRC}/${folder}/*.h ${SRC}/${folder}/*.def)
  foreach(h ${headers})
    if(DEFINED HOME_${h})
      message(SEND_ERROR "${folder}/${h}: a header of the same name is in ${HOME_${h}} "
                         "(includes are by name: rename one)")
    endif()
    set(HOME_${h} ${folder})
  endforeach()
endforeach()

set(n_files 0)
set(n_includes 0)
foreach(folder ${FOLDERS})
  file(GLOB sources ${SRC}/${folder}/*.c ${SRC}/${folder}/*.h)
  foreach(path ${sources})
    math(EXPR n_files "${n_files} + 1")
    file(RELATIVE_PATH rel ${SRC} ${path})
    file(STRINGS ${path} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line ${lines})
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]+)\".*" "\\1" name "${line}")
      math(EXPR n_includes "${n_includes} + 1")
      if(NOT DEFINED HOME_${name})
        continue() # generated or system-style headers (none of ours)
      endif()
      set(home ${HOME_${name}})
      list(FIND MAY_${folder} ${home} ok_folder)
      list(FIND MAY_${folder} ${name} ok_name)
      if(ok_folder EQUAL -1 AND ok_name EQUAL -1)
        message(SEND_ERROR "${rel}: includes ${home}/${name}, but ${folder} may depend only "
                           "on: ${MAY_${folder}} (docs/architecture.md)")
      endif()
    endforeach()
  endforeach()
endforeach()
message(STATUS "checked ${n_includes} includes in ${n_files} files of ${FOLDERS}")
