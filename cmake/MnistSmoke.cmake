# ctest driver of the MNIST end-to-end smoke test (examples/CMakeLists.txt):
# trains mnist_vae for one epoch on the first few thousand images, then
# checks that the model file, the checkpoint and every picture were written
# and that the saved model loads back in `sample` mode. Then the run folder
# rules and resuming: a second run into the same --out is refused and leaves
# the model alone; a run resumed from an epoch boundary, and one stopped by
# SIGINT part-way through an epoch and resumed, print the same last epoch
# line as a run that never stopped; a conflicting setting on --resume is
# refused; the same for an IWAE run with warm-up and the continuous
# Bernoulli. Skipped (via the ctest SKIP_REGULAR_EXPRESSION) when the MNIST
# files are not in DATA.
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
foreach(f model.vae checkpoint.vae samples.png reconstructions.png interpolation.png
          manifold.png latent_scatter.png)
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

# Another training run into the same folder is refused (exit status 2) and
# leaves the model as it was.
file(SHA256 "${OUT}/model.vae" model_before)
execute_process(COMMAND "${EXE}" --epochs 1 --train-limit 1000 --data "${DATA}" --out "${OUT}"
                RESULT_VARIABLE rc ERROR_VARIABLE err)
file(SHA256 "${OUT}/model.vae" model_after)
if(NOT rc EQUAL 2 OR NOT err MATCHES "already holds" OR NOT model_before STREQUAL model_after)
  message(FATAL_ERROR "a second run into ${OUT} was not refused (status ${rc}):\n${err}")
endif()

# Resuming. The same small run three ways; the line of its last epoch (the
# losses, without the times) must be the same text each time.
set(run --train-limit 6000 --batch 50 --latent 2 --data "${DATA}")
function(last_epoch_line text var)
  string(REGEX MATCHALL "epoch  2/2  [^\n]* nats per image" lines "${text}")
  list(LENGTH lines n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "expected one line for epoch 2/2, got ${n}:\n${text}")
  endif()
  set(${var} "${lines}" PARENT_SCOPE)
endfunction()

# The run ARGN two epochs straight into OUT/<name>, and one epoch into
# OUT/<name>-resumed (a checkpoint every 7 steps) then --resume to two: both
# must print the same last epoch line. Sets <name>_out to the straight
# run's output and <name>_line to that line.
function(straight_and_resumed name)
  execute_process(COMMAND "${EXE}" --epochs 2 ${ARGN} --checkpoint-every 0
                          --out "${OUT}/${name}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the straight ${name} run failed (${rc}):\n${out}")
  endif()
  last_epoch_line("${out}" straight)
  execute_process(COMMAND "${EXE}" --epochs 1 ${ARGN} --checkpoint-every 7
                          --out "${OUT}/${name}-resumed"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out1)
  execute_process(COMMAND "${EXE}" --resume "${OUT}/${name}-resumed/checkpoint.vae" --epochs 2
                  RESULT_VARIABLE rc2 OUTPUT_VARIABLE out2)
  if(NOT rc EQUAL 0 OR NOT rc2 EQUAL 0)
    message(FATAL_ERROR "the ${name} run resumed at an epoch boundary failed (${rc}, ${rc2}):\n"
                        "${out1}\n${out2}")
  endif()
  last_epoch_line("${out2}" resumed)
  if(NOT resumed STREQUAL straight)
    message(FATAL_ERROR "${name}, resumed at an epoch boundary:\n  ${resumed}\n"
                        "straight:\n  ${straight}")
  endif()
  set(${name}_out "${out}" PARENT_SCOPE)
  set(${name}_line "${straight}" PARENT_SCOPE)
endfunction()

# `flag value` on --resume of OUT/<name>-resumed, whose run has `stored`:
# refused with status 2 and a message naming both.
function(refused_on_resume name flag value stored)
  execute_process(COMMAND "${EXE}" --resume "${OUT}/${name}-resumed/checkpoint.vae" ${flag}
                          ${value}
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 2 OR NOT err MATCHES "${flag} ${value} \\(the run has ${stored}\\)")
    message(FATAL_ERROR "a conflicting ${flag} on --resume was not refused (${rc}):\n${err}")
  endif()
endfunction()

straight_and_resumed(mlp ${run})
refused_on_resume(mlp --latent 3 2)

# Part-way through an epoch: SIGINT as soon as the first step checkpoint
# exists (training has begun, the handler is in place), then --resume. When
# the signal lands does not matter to the result, only to what is covered;
# a run that finished before it (status 0) compares all the same.
find_program(SH sh)
if(SH)
  set(dir "${OUT}/interrupted")
  execute_process(COMMAND "${SH}" -c [=[
dir=$1
shift
"$0" --epochs 2 "$@" --checkpoint-every 5 --out "$dir" > "$dir.log" 2>&1 &
pid=$!
n=0
while [ ! -f "$dir/checkpoint.vae" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
kill -INT $pid 2>/dev/null
wait $pid
echo "status $?"
]=] "${EXE}" "${dir}" ${run}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE status OUTPUT_STRIP_TRAILING_WHITESPACE)
  file(READ "${dir}.log" out1)
  if(NOT status MATCHES "status (0|130)")
    message(FATAL_ERROR "the interrupted run ended with ${status}:\n${out1}")
  endif()
  if(status MATCHES "status 130" AND NOT out1 MATCHES "--resume")
    message(FATAL_ERROR "the interrupted run did not say how to resume:\n${out1}")
  endif()
  execute_process(COMMAND "${EXE}" --resume "${dir}/checkpoint.vae"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out2)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "resuming the interrupted run failed (${rc}):\n${out1}\n${out2}")
  endif()
  last_epoch_line("${out1}${out2}" interrupted)
  if(NOT interrupted STREQUAL mlp_line)
    message(FATAL_ERROR "interrupted and resumed:\n  ${interrupted}\nstraight:\n  ${mlp_line}")
  endif()
  string(REGEX MATCH "stopped in epoch [0-9]+ after [0-9]+ of [0-9]+ images" where "${out1}")
  message("interrupted run: ${status}; ${where}")
endif()

# The objectives and likelihood of 1.2 go through the same resume: IWAE of 3
# draws, a KL warm-up that ends inside the second epoch, the continuous
# Bernoulli; stopped at the epoch boundary and resumed, it prints the
# straight run's last line. --iwae with another value on --resume is refused.
set(run12 --train-limit 2000 --batch 50 --latent 2 --iwae 3 --warmup 60 --likelihood cb
          --data "${DATA}")
straight_and_resumed(iwae ${run12})
if(NOT iwae_out MATCHES "IWAE with 3 draws, KL warm-up over 60 steps"
   OR NOT iwae_out MATCHES "continuous Bernoulli")
  message(FATAL_ERROR "the IWAE run does not say its objective and likelihood:\n${iwae_out}")
endif()
refused_on_resume(iwae --iwae 2 3)
