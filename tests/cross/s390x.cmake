# s390x: 64-bit, big-endian, IEEE-754 binary floating point; z/Architecture has
# fused multiply-add, which GCC contracts a*b+c into only outside ISO C mode
# (the library builds with -std=c11). Run under qemu-s390x.
set(CMAKE_SYSTEM_PROCESSOR s390x)
set(VAE_CROSS_TRIPLET s390x-linux-gnu)
set(CMAKE_LIBRARY_ARCHITECTURE s390x-linux-gnu)
include(${CMAKE_CURRENT_LIST_DIR}/toolchain.cmake)
