"""TileLang kernels of csa-dsl (Hopper, sm_90a), one folder per stage: sparse_mla/."""
