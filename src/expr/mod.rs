//! Lazy, fused, streaming execution.
//!
//! Operations on arrays build a graph instead of computing: element-wise nodes ([`lazy::Node`])
//! are themselves chunk sources, evaluated one region at a time with every element-wise step fused
//! into one tiled pass; reductions, scans and the out-of-core kernels consume any source, lazy or
//! stored, chunk by chunk on the rayon pool.

pub(crate) mod kernels;
pub mod lazy;
pub(crate) mod num;
pub mod ops;
pub(crate) mod vmath;
pub(crate) mod vmath32;

pub use lazy::{ConstValue, Node, Plan, Src, as_node, broadcast_shapes};
pub use ops::{BinOp, UnOp, Weak, promote};
pub mod mem;
pub mod reduction;

pub use mem::MemArray;
pub use reduction::{RedOp, Reduction, reduce_all, reduce_axis};
pub mod views;
pub use views::{Concatenated, Generated, Index, Rechunked, Reshaped, Sliced};
pub mod scan;
pub use scan::{Scan, ScanOp};
pub mod array;
pub mod persist;
pub mod product;

pub use array::{Array, Broadcast, Operand, Session, SessionConfig, norm_axis};
pub mod script;
