// vae/vae_mpi.h from C++11 with every warning an error, linked and run on
// one rank: extern "C" linkage and declarations a C++ compiler accepts.
// Open MPI's and MPICH's <mpi.h> declare the removed MPI C++ bindings for
// C++ unless told not to; they would need libmpi_cxx, and nothing here uses
// them.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1

#include <cstdio>

#include <vae/vae_mpi.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    vae_mpi *h = nullptr;
    int rc = vae_mpi_create(&h, MPI_COMM_SELF);
    if (rc == VAE_OK && (vae_mpi_rank(h) != 0 || vae_mpi_size(h) != 1))
        rc = VAE_ERR_STATE;
    if (rc != VAE_OK)
        std::fprintf(stderr, "%s\n", vae_mpi_last_error());
    vae_mpi_free(h);
    MPI_Finalize();
    return rc == VAE_OK ? 0 : 1;
}
