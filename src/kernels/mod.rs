//! Out-of-core kernels that need more than one streaming pass or more than one chunk at a time:
//! external sort and top-k, histograms, exact quantiles, blocked matrix products and 2-D
//! transposes. Every kernel reads through [`ChunkSource`](crate::storage::ChunkSource), so it works
//! on files and on lazy expressions alike, and draws its memory from the budget.

pub mod histogram;
pub mod matmul;
pub(crate) mod prefetch;
pub mod quantile;
pub mod sort;
pub mod transpose;
