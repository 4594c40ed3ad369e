//! gadms-data's integration tests, in one test binary: random shard byte flips (`fuzz`), the
//! loader (`loader`), manifest checks (`manifest`), masking and augmentation (`masking`),
//! `gadms pack` through the library (`pack`), shards (`shard`) and the CLIP tokenizer with its
//! ftfy/html clean-up (`tokenizer`).

mod fuzz;
mod loader;
mod manifest;
mod masking;
mod pack;
mod shard;
mod shard_v2;
mod tokenizer;
