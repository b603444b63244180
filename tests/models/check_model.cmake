# check_model.cmake - data-driven checks of the model files, run by ctest as `cmake -P`.
#
#   counts:  cmake -DMODE=counts -DCAPC=bin -DMODEL=file.json -DPARAMETERS=N -DTRAINABLE=N
#                  [-DDEFINES=a=1,b=2] -P check_model.cmake
#            runs `capc --check [-D ...] MODEL`, requires exit 0 and exactly the summary lines
#            `parameters: N` and `trainable: N` (the numbers PyTorch prints for the model).
#   names:   cmake -DMODE=names -DCAPC=bin -DMODEL=file.json -DNAME=captioner -DPYTHON=python3
#                  -DSCRIPT=scripts/param_counts.py -DDUMP_DIR=dir [-DDEFINES=...] -P ...
#            dumps the IR and compares every param/buffer line (name, shape, frozen flag)
#            with the independent list of scripts/param_counts.py.
#   golden:  cmake -DMODE=golden -DCAPC=bin -DMODEL=models/x.json -DNAME=x -DDATA=dir
#                  -DDUMP_DIR=dir [-DUPDATE=1] -P check_model.cmake   (from the source tree)
#            runs `capc --check --target=cpu --dump-ir=DUMP_DIR MODEL` and compares, byte for
#            byte, the IR after the shapes pass (01-shapes.ir) with DATA/NAME.shapes.ir(.gz)
#            and the parameter list (every param/buffer line of that IR, then the summary's
#            `parameters:` and `trainable:` lines) with DATA/NAME.params.txt. The files were
#            written by the capc before the model files were refactored (UPDATE=1 writes
#            them): a refactoring of the model files must leave the IR exactly as it was.
cmake_minimum_required(VERSION 3.20)

set(define_args)
if(DEFINES)
  string(REPLACE "," ";" defs "${DEFINES}")
  foreach(d IN LISTS defs)
    list(APPEND define_args -D "${d}")
  endforeach()
endif()

if(MODE STREQUAL "counts")
  execute_process(COMMAND "${CAPC}" --check ${define_args} "${MODEL}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "capc --check ${DEFINES} ${MODEL} exited with ${rc}\n${out}${err}")
  endif()
  foreach(pair "parameters;${PARAMETERS}" "trainable;${TRAINABLE}")
    list(GET pair 0 key)
    list(GET pair 1 want)
    if(NOT out MATCHES "(^|\n)${key}: ([0-9]+)\n")
      message(FATAL_ERROR "${MODEL}: no line '${key}: N' in the summary:\n${out}")
    endif()
    if(NOT CMAKE_MATCH_2 STREQUAL want)
      message(FATAL_ERROR "${MODEL}: ${key}: ${CMAKE_MATCH_2}, PyTorch counts ${want}\n${out}")
    endif()
  endforeach()
  message(STATUS "${MODEL} ${DEFINES}: parameters ${PARAMETERS}, trainable ${TRAINABLE}")
elseif(MODE STREQUAL "names")
  file(REMOVE_RECURSE "${DUMP_DIR}")
  execute_process(COMMAND "${CAPC}" --check ${define_args} "--dump-ir=${DUMP_DIR}" "${MODEL}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "capc --check --dump-ir ${MODEL} exited with ${rc}\n${out}${err}")
  endif()
  file(GLOB dumps "${DUMP_DIR}/*.ir")
  list(SORT dumps)
  if(NOT dumps)
    message(FATAL_ERROR "capc wrote no IR dumps to ${DUMP_DIR}")
  endif()
  list(GET dumps -1 last)   # the last stage: what the later parts see
  execute_process(COMMAND "${PYTHON}" "${SCRIPT}" ${define_args} --compare-ir "${NAME}" "${last}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "parameter names of ${MODEL} differ from PyTorch's:\n${out}${err}")
  endif()
  message(STATUS "${out}")
elseif(MODE STREQUAL "golden")
  file(REMOVE_RECURSE "${DUMP_DIR}")
  execute_process(COMMAND "${CAPC}" --check --target=cpu ${define_args} "--dump-ir=${DUMP_DIR}"
                          "${MODEL}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "capc --check --dump-ir ${MODEL} exited with ${rc}\n${out}${err}")
  endif()
  set(shapes "${DUMP_DIR}/01-shapes.ir")
  file(STRINGS "${shapes}" param_lines REGEX "^(param|buffer) ")
  string(REGEX MATCHALL "(^|\n)(parameters|trainable): [0-9]+" counts "${out}")
  string(REPLACE ";" "\n" param_lines "${param_lines}")
  string(REPLACE ";" "" counts "${counts}")
  file(WRITE "${DUMP_DIR}/params.txt" "${param_lines}${counts}\n")
  if(UPDATE)
    file(MAKE_DIRECTORY "${DATA}")
    file(COPY_FILE "${DUMP_DIR}/params.txt" "${DATA}/${NAME}.params.txt")
    file(SIZE "${shapes}" size)
    if(size GREATER 1000000)
      execute_process(COMMAND gzip -n -9 -c "${shapes}" OUTPUT_FILE "${DATA}/${NAME}.shapes.ir.gz")
    else()
      file(COPY_FILE "${shapes}" "${DATA}/${NAME}.shapes.ir")
    endif()
    message(STATUS "wrote ${DATA}/${NAME}.*")
    return()
  endif()
  set(want "${DATA}/${NAME}.shapes.ir")
  if(EXISTS "${want}.gz")
    set(want "${DUMP_DIR}/expected-shapes.ir")
    execute_process(COMMAND gzip -dc "${DATA}/${NAME}.shapes.ir.gz" OUTPUT_FILE "${want}"
                    RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "gzip -dc ${DATA}/${NAME}.shapes.ir.gz failed")
    endif()
  endif()
  foreach(pair "${shapes};${want}" "${DUMP_DIR}/params.txt;${DATA}/${NAME}.params.txt")
    list(GET pair 0 got)
    list(GET pair 1 expected)
    execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files "${got}" "${expected}"
                    RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      execute_process(COMMAND diff -u "${expected}" "${got}" OUTPUT_VARIABLE d)
      string(SUBSTRING "${d}" 0 4000 d)
      message(FATAL_ERROR "${MODEL}: ${got} differs from ${expected}:\n${d}")
    endif()
  endforeach()
  message(STATUS "${MODEL}: IR after shapes and parameter list as committed")
else()
  message(FATAL_ERROR "check_model.cmake: unknown MODE '${MODE}'")
endif()
