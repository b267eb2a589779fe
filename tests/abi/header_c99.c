/* The public header must compile as strict C99 (built with -pedantic-errors). */
#include <vae/vae.h>

int main(void)
{
    return vae_version_number() == VAE_VERSION_NUMBER ? 0 : 1;
}
