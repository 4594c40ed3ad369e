//! gadms-data's integration tests, in one test binary: the loader (`loader`), manifest checks
//! (`manifest`), masking and augmentation (`masking`), `gadms pack` through the library
//! (`pack`), shards (`shard`) and the CLIP tokenizer with its ftfy/html clean-up (`tokenizer`).

mod loader;
mod manifest;
mod masking;
mod pack;
mod shard;
mod tokenizer;
