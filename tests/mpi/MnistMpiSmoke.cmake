# ctest driver of the mnist_vae_mpi smoke test (examples/CMakeLists.txt):
# on the first 3000 MNIST training images, two epochs three ways, whose
# epoch lines (the losses, without the times) must be the same text:
#   - mnist_vae, one process, 1 worker: the reference;
#   - mpiexec -np 2 mnist_vae_mpi, epoch 1 with a checkpoint after it, then
#     mpiexec -np 3 mnist_vae_mpi --resume for epoch 2.
# Then the run folder rules: a new run into the same --out is refused
# (status 2) and leaves the model alone. Skipped (the ctest
# SKIP_REGULAR_EXPRESSION) when the MNIST files are not in DATA.
#   -DEXE=<mnist_vae_mpi> -DREF=<mnist_vae> -DDATA=<dir> -DOUT=<scratch>
#   -DMPIEXEC=<mpiexec> -DMPIEXEC_FLAGS=<;-separated>
foreach(f train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte
          t10k-labels-idx1-ubyte)
  if(NOT EXISTS "${DATA}/${f}" AND NOT EXISTS "${DATA}/${f}.gz")
    message("MNIST-NOT-FOUND: ${DATA}/${f} is missing; run examples/fetch_mnist.sh")
    return()
  endif()
endforeach()
file(REMOVE_RECURSE "${OUT}")
set(common --train-limit 3000 --threads 1 --data "${DATA}")

function(run_ok out_var)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "${cmd}\nfailed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
  set(${out_var} "${out}" PARENT_SCOPE)
endfunction()

# The losses of epoch `n` of 2 printed in `text`.
function(epoch_losses text n var)
  string(REGEX MATCHALL "epoch  ${n}/2  train loss [^\n]* nats per image" lines "${text}")
  list(LENGTH lines count)
  if(NOT count EQUAL 1)
    message(FATAL_ERROR "expected one line for epoch ${n}/2, got ${count}:\n${text}")
  endif()
  set(${var} "${lines}" PARENT_SCOPE)
endfunction()

run_ok(ref "${REF}" --epochs 2 ${common} --out "${OUT}/ref")
epoch_losses("${ref}" 1 ref1)
epoch_losses("${ref}" 2 ref2)

run_ok(first ${MPIEXEC} ${MPIEXEC_FLAGS} -np 2 "${EXE}" --epochs 2 ${common} --out "${OUT}/mpi"
       --checkpoint-every-epoch)
epoch_losses("${first}" 1 mpi1)
epoch_losses("${first}" 2 mpi2)
if(NOT mpi1 STREQUAL ref1 OR NOT mpi2 STREQUAL ref2)
  message(FATAL_ERROR "mpiexec -np 2 mnist_vae_mpi printed\n  ${mpi1}\n  ${mpi2}\n"
                      "mnist_vae printed\n  ${ref1}\n  ${ref2}")
endif()
foreach(f model.vae checkpoint.vae)
  if(NOT EXISTS "${OUT}/mpi/${f}")
    message(FATAL_ERROR "mnist_vae_mpi did not write ${OUT}/mpi/${f}")
  endif()
endforeach()

# Epoch 1 with 2 ranks, its checkpoint, then epoch 2 with 3 ranks.
run_ok(part ${MPIEXEC} ${MPIEXEC_FLAGS} -np 2 "${EXE}" --epochs 1 ${common} --out "${OUT}/split")
run_ok(rest ${MPIEXEC} ${MPIEXEC_FLAGS} -np 3 "${EXE}" --resume "${OUT}/split/checkpoint.vae"
       --epochs 2 --threads 1 --data "${DATA}")
if(NOT rest MATCHES "resuming [^\n]*: 1 of 2 epochs done")
  message(FATAL_ERROR "the resumed run does not say where it resumed:\n${rest}")
endif()
epoch_losses("${rest}" 2 resumed2)
if(NOT resumed2 STREQUAL ref2)
  message(FATAL_ERROR "resumed with 3 ranks:\n  ${resumed2}\nmnist_vae:\n  ${ref2}")
endif()

# A new run into a folder that holds a model is refused.
file(SHA256 "${OUT}/mpi/model.vae" before)
execute_process(COMMAND ${MPIEXEC} ${MPIEXEC_FLAGS} -np 2 "${EXE}" --epochs 1 --train-limit 500
                        --data "${DATA}" --out "${OUT}/mpi"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
file(SHA256 "${OUT}/mpi/model.vae" after)
if(NOT rc EQUAL 2 OR NOT err MATCHES "already holds" OR NOT before STREQUAL after)
  message(FATAL_ERROR "a second run into ${OUT}/mpi was not refused (status ${rc}):\n"
                      "${out}\n${err}")
endif()
