// The public header must compile as C++ and link with C linkage (extern "C").
#include <vae/vae.h>

int main()
{
    vae_rng *rng = nullptr;
    if (vae_rng_create(&rng, 1) != VAE_OK)
        return 1;
    vae_rng_free(rng);
    return vae_version_number() == VAE_VERSION_NUMBER ? 0 : 1;
}
