/* vae/vae_mpi.h in strict C99 with every warning an error, linked and run
 * on one rank: the declarations are callable as written. */
#include <stdio.h>

#include <vae/vae_mpi.h>

int main(int argc, char **argv)
{
    vae_mpi *h = NULL;
    int rc;
    MPI_Init(&argc, &argv);
    rc = vae_mpi_create(&h, MPI_COMM_SELF);
    if (rc == VAE_OK && (vae_mpi_rank(h) != 0 || vae_mpi_size(h) != 1))
        rc = VAE_ERR_STATE;
    if (rc == VAE_OK && vae_mpi_set_chunk_bytes(h, 0) != VAE_ERR_INVALID)
        rc = VAE_ERR_STATE;
    if (rc != VAE_OK)
        fprintf(stderr, "%s\n", vae_mpi_last_error());
    vae_mpi_free(h);
    MPI_Finalize();
    return rc == VAE_OK ? 0 : 1;
}
