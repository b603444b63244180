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
#   same:    cmake -DMODE=same -DMODEL=a.json -DOTHER=b.json -P check_model.cmake
#            requires the two files to be identical apart from "model" and "config": the
#            captioners share one architecture and differ only in their configuration.
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
elseif(MODE STREQUAL "same")
  file(READ "${MODEL}" a)
  file(READ "${OTHER}" b)
  foreach(key inputs frozen blocks body outputs train entries)
    string(JSON va GET "${a}" ${key})
    string(JSON vb GET "${b}" ${key})
    if(NOT va STREQUAL vb)
      message(FATAL_ERROR "${MODEL} and ${OTHER} differ in \"${key}\"; the captioners must "
                          "differ only in their config")
    endif()
  endforeach()
  string(JSON na LENGTH "${a}" config)
  string(JSON nb LENGTH "${b}" config)
  math(EXPR last "${na} - 1")
  foreach(i RANGE ${last})
    string(JSON k MEMBER "${a}" config ${i})
    string(JSON kb ERROR_VARIABLE missing GET "${b}" config ${k})
    if(missing)
      message(FATAL_ERROR "config variable ${k} of ${MODEL} is missing in ${OTHER}")
    endif()
  endforeach()
  if(NOT na EQUAL nb)
    message(FATAL_ERROR "${MODEL} has ${na} config variables, ${OTHER} ${nb}")
  endif()
else()
  message(FATAL_ERROR "check_model.cmake: unknown MODE '${MODE}'")
endif()
