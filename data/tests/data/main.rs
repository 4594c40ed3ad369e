//! gadms-data's integration tests, in one test binary: the loader (`loader`), masking and
//! augmentation (`masking`), `gadms pack` through the library (`pack`), shards (`shard`) and the
//! CLIP tokenizer with its ftfy/html clean-up (`tokenizer`).

mod loader;
mod masking;
mod pack;
mod shard;
mod tokenizer;
