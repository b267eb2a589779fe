# ctest driver of the MNIST end-to-end smoke test (examples/CMakeLists.txt):
# trains mnist_vae for one epoch on the first few thousand images, then
# checks that the model file and every picture were written and that the
# saved model loads back in `sample` mode. Skipped (via the ctest
# SKIP_REGULAR_EXPRESSION) when the MNIST files are not in DATA.
foreach(f train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte
          t10k-labels-idx1-ubyte)
  if(NOT EXISTS "${DATA}/${f}" AND NOT EXISTS "${DATA}/${f}.gz")
    message("MNIST-NOT-FOUND: ${DATA}/${f} is missing; run examples/fetch_mnist.sh")
    return()
  endif()
endforeach()
file(REMOVE_RECURSE "${OUT}")
execute_process(COMMAND "${EXE}" --epochs 1 --train-limit 3000 --latent 2 --data "${DATA}"
                        --out "${OUT}" --ll 20 --ll-limit 200
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "mnist_vae failed with ${rc}")
endif()
foreach(f model.vae samples.png reconstructions.png interpolation.png manifold.png
          latent_scatter.png)
  if(NOT EXISTS "${OUT}/${f}")
    message(FATAL_ERROR "mnist_vae did not write ${OUT}/${f}")
  endif()
  file(SIZE "${OUT}/${f}" size)
  if(size LESS 100)
    message(FATAL_ERROR "${OUT}/${f} has only ${size} bytes")
  endif()
endforeach()
file(REMOVE "${OUT}/samples.png")
execute_process(COMMAND "${EXE}" sample --model "${OUT}/model.vae" --out "${OUT}"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT EXISTS "${OUT}/samples.png")
  message(FATAL_ERROR "mnist_vae sample could not use the saved model (${rc})")
endif()
