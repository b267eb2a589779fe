# i386: 32-bit, little-endian, with Debian's i386 defaults (-march=i686, x87
# floating point, FLT_EVAL_METHOD 2: float expressions evaluated in extended
# precision). Deliberately not -msse2 -mfpmath=sse: tests/golden/README.md,
# "The i386 build". Runs natively on an x86-64 kernel.
set(CMAKE_SYSTEM_PROCESSOR i686)
set(VAE_CROSS_TRIPLET i686-linux-gnu)
set(CMAKE_LIBRARY_ARCHITECTURE i386-linux-gnu)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain.cmake)
