//! Lazy element-wise expressions and their fused evaluation.
//!
//! A [`Node`] is itself a [`ChunkSource`]: reading one of its chunks evaluates the whole
//! element-wise graph below it for that region only. Evaluation is planned once per node
//! ([`Plan`]): the graph is flattened into steps with common subexpressions shared (by identity
//! and by structure), every non-expression source becomes a leaf read once per region, scalars
//! become constant tiles, and the steps run tile by tile (`TILE` elements, so the temporaries
//! stay in L1/L2) — `sum(a*2+b)` reads `a` and `b` once and allocates only per-chunk scratch.

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::kernels::{self, Affine, StepFn};
use super::ops::{BinOp, UnOp};
use crate::dtype::{ByteOrder, DType};
use crate::error::{Error, Result};
use crate::shape::{ChunkLayout, Region, numel, shape_str};
use crate::storage::{Buffer, Chunk, ChunkSource, Format, SourceInfo};

/// Elements per tile: 4096 x 8 bytes = 32 KiB per temporary.
pub(crate) const TILE: usize = 4096;

/// A shared source (a file, a view, or another expression).
pub type Src = Arc<dyn ChunkSource>;

/// What a [`Node`] computes.
pub(crate) enum NodeOp {
    /// One element of the node's dtype, broadcast to any shape (the node's shape is `[]`).
    Const(Vec<u8>),
    Unary(UnOp, Src),
    Binary(BinOp, Src, Src),
    Where(Src, Src, Src),
    /// Conversion to the node's dtype.
    Cast(Src),
}

/// A lazy element-wise expression over other sources. Reading a chunk evaluates it.
pub struct Node {
    info: SourceInfo,
    op: NodeOp,
    plan: OnceLock<std::result::Result<Plan, String>>,
}

/// NumPy's broadcasting of two shapes.
pub fn broadcast_shapes(a: &[u64], b: &[u64]) -> Result<Vec<u64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::Invalid(format!(
                "operands could not be broadcast together with shapes {} {}",
                shape_str(a),
                shape_str(b)
            )));
        };
    }
    Ok(out)
}

/// Builds [`SourceInfo`] for a computed source (no file behind it).
pub fn computed_source_info(
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    layout: ChunkLayout,
) -> SourceInfo {
    SourceInfo {
        name,
        path: PathBuf::new(),
        format: Format::Computed,
        dtype,
        shape,
        layout,
        byte_order: ByteOrder::NATIVE,
        stored_bytes: 0,
        details: Vec::new(),
    }
}

/// Short display name of a source inside an expression.
fn label(s: &Src) -> String {
    let info = s.info();
    if info.format == Format::Computed {
        return info.name.clone();
    }
    let base = info
        .path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| info.name.clone());
    match info.name.rsplit_once('#') {
        Some((_, col)) => format!("{base}#{col}"),
        None => base,
    }
}

fn wrap(s: &Src) -> String {
    let l = label(s);
    if as_node(s).is_some_and(|n| matches!(n.op, NodeOp::Binary(..) | NodeOp::Where(..))) {
        format!("({l})")
    } else {
        l
    }
}

/// The expression node behind a source, if it is one.
pub fn as_node(s: &Src) -> Option<&Node> {
    let any: &dyn Any = s.as_ref();
    any.downcast_ref::<Node>()
}

impl Node {
    fn make(name: String, dtype: DType, shape: Vec<u64>, op: NodeOp, layout_from: &[&Src]) -> Src {
        let layout = choose_layout(&shape, dtype, layout_from);
        Arc::new(Node {
            info: computed_source_info(name, dtype, shape, layout),
            op,
            plan: OnceLock::new(),
        })
    }

    /// A scalar constant of `dtype` (shape `[]`), given as its value in `f64`/`i128` form.
    pub fn constant(dtype: DType, value: ConstValue) -> Src {
        let bytes = crate::with_dtype!(dtype, T => {
            let v: T = match value {
                ConstValue::Int(i) => <T as super::num::Num>::from_i128(i),
                ConstValue::Float(f) => <T as crate::Element>::from_f64(f),
                ConstValue::Bool(b) => <T as super::num::Num>::from_i128(i128::from(b)),
            };
            bytemuck::bytes_of(&v).to_vec()
        });
        let name = value.to_string();
        Arc::new(Node {
            info: computed_source_info(name, dtype, vec![], ChunkLayout::contiguous(&[], 1, 1)),
            op: NodeOp::Const(bytes),
            plan: OnceLock::new(),
        })
    }

    /// `src` converted to `dtype` (returns `src` itself when it already is).
    pub fn cast(src: &Src, dtype: DType) -> Src {
        if src.info().dtype == dtype {
            return src.clone();
        }
        if let Some(n) = as_node(src)
            && let NodeOp::Const(bytes) = &n.op
        {
            let from = n.info.dtype;
            let mut out = vec![0u8; dtype.size()];
            let f = kernels::convert(from, dtype);
            let mut word = vec![0u64; 1];
            let w: &mut [u8] = bytemuck::cast_slice_mut(&mut word);
            w[..bytes.len()].copy_from_slice(bytes);
            // Converting one element cannot fail.
            let _ = f(&[&w[..from.size()]], &mut out);
            return Arc::new(Node {
                info: computed_source_info(
                    n.info.name.clone(),
                    dtype,
                    vec![],
                    ChunkLayout::contiguous(&[], 1, 1),
                ),
                op: NodeOp::Const(out),
                plan: OnceLock::new(),
            });
        }
        let info = src.info();
        Node::make(
            format!("{}.astype({dtype})", wrap(src)),
            dtype,
            info.shape.clone(),
            NodeOp::Cast(src.clone()),
            &[src],
        )
    }

    /// `op(a)` with NumPy's result type.
    pub fn unary(op: UnOp, a: &Src) -> Result<Src> {
        let (compute, out) = op.types(a.info().dtype)?;
        let a = Node::cast(a, compute);
        let name = match op {
            UnOp::Neg => format!("-{}", wrap(&a)),
            UnOp::Invert => format!("~{}", wrap(&a)),
            _ => format!("{}({})", op.name(), label(&a)),
        };
        let shape = a.info().shape.clone();
        Ok(Node::make(
            name,
            out,
            shape,
            NodeOp::Unary(op, a.clone()),
            &[&a],
        ))
    }

    /// `a op b` with NumPy's promotion and broadcasting.
    pub fn binary(op: BinOp, a: &Src, b: &Src) -> Result<Src> {
        let (compute, out) = op.types(a.info().dtype, b.info().dtype)?;
        let shape = broadcast_shapes(&a.info().shape, &b.info().shape)?;
        let a = Node::cast(a, compute);
        let b = Node::cast(b, compute);
        let name = if op.is_infix() {
            format!("{} {} {}", wrap(&a), op.name(), wrap(&b))
        } else {
            format!("{}({}, {})", op.name(), label(&a), label(&b))
        };
        Ok(Node::make(
            name,
            out,
            shape,
            NodeOp::Binary(op, a.clone(), b.clone()),
            &[&a, &b],
        ))
    }

    /// `where(cond, a, b)`.
    pub fn select(cond: &Src, a: &Src, b: &Src) -> Result<Src> {
        let dtype = super::ops::promote(a.info().dtype, b.info().dtype);
        let shape = broadcast_shapes(
            &broadcast_shapes(&cond.info().shape, &a.info().shape)?,
            &b.info().shape,
        )?;
        let c = Node::cast(cond, DType::Bool);
        let a = Node::cast(a, dtype);
        let b = Node::cast(b, dtype);
        let name = format!("where({}, {}, {})", label(&c), label(&a), label(&b));
        Ok(Node::make(
            name,
            dtype,
            shape,
            NodeOp::Where(c.clone(), a.clone(), b.clone()),
            &[&c, &a, &b],
        ))
    }

    /// The compiled plan (built on first use).
    pub fn plan(&self) -> Result<&Plan> {
        self.plan
            .get_or_init(|| Plan::build(self).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Invalid(e.clone()))
    }

    /// Evaluates `region` of the expression, handing each tile of results (as bytes of the
    /// node's dtype, in C order of the region) to `sink` with its element offset.
    pub fn for_each_tile(
        &self,
        region: &Region,
        sink: &mut dyn FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.plan()?.run(region, sink)
    }
}

/// A scalar constant's value before it is given a dtype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConstValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
}

impl std::fmt::Display for ConstValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConstValue::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            ConstValue::Int(i) => write!(f, "{i}"),
            ConstValue::Float(x) => f.write_str(&crate::reduce::fmt_f64(*x)),
        }
    }
}

/// The output chunking: that of the first operand with the full shape (so it is read without
/// copying), else contiguous ~8 MiB runs.
fn choose_layout(shape: &[u64], dtype: DType, from: &[&Src]) -> ChunkLayout {
    for s in from {
        let info = s.info();
        if info.shape == shape {
            // Keep chunks a sensible size when the result is wider than the operand.
            let chunk_bytes = info.layout.max_chunk_elems() * dtype.size() as u64;
            if chunk_bytes <= 4 * crate::formats::DEFAULT_CHUNK_BYTES {
                return info.layout.clone();
            }
        }
    }
    ChunkLayout::contiguous(shape, dtype.size(), crate::formats::DEFAULT_CHUNK_BYTES)
}

impl ChunkSource for Node {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read_chunk(&self, index: usize) -> Result<Chunk> {
        crate::storage::chunk_from_region(self, index)
    }

    fn read_region(&self, region: &Region) -> Result<Buffer> {
        let esize = self.info.dtype.size();
        let mut out = Buffer::for_overwrite(region.numel() as usize * esize)?;
        self.read_region_into(region, out.bytes_mut())?;
        Ok(out)
    }

    fn read_region_into(&self, region: &Region, bytes: &mut [u8]) -> Result<()> {
        let esize = self.info.dtype.size();
        if bytes.len() as u64 != region.numel() * esize as u64 {
            return Err(Error::Invalid(format!(
                "{}: region {} of {} bytes read into {} bytes",
                self.info.name,
                shape_str(&region.shape),
                region.numel() * esize as u64,
                bytes.len()
            )));
        }
        // Each tile is evaluated in cache and copied once, straight to its place in `bytes`.
        self.for_each_tile(region, &mut |off, tile| {
            bytes[off * esize..off * esize + tile.len()].copy_from_slice(tile);
            Ok(())
        })
    }
}

/// Where a step reads an input from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Operand {
    Leaf(usize),
    Const(usize),
    Step(usize),
}

struct Leaf {
    src: Src,
    /// Elements per output element read (1, or less when broadcast).
    label: String,
}

struct Step {
    f: StepFn,
    inputs: Vec<Operand>,
    dtype: DType,
    label: String,
    /// What the fusion pass may do with this step.
    fuse: Fusable,
    /// Scalar transforms folded into the inputs (identities unless fused).
    pre: [Affine; 2],
}

/// How a float step can take part in fusion (see `Builder::fuse`).
#[derive(Clone, Copy, Debug)]
enum Fusable {
    /// Not at all.
    No,
    /// `x * m + c` with scalar `m`, `c`: foldable into the step that consumes it.
    Affine(Operand, Affine),
    /// `x op y` for `+ - * /`: can take transforms of its operands into its own loop.
    Arith(BinOp),
}

/// A compiled expression: leaves to read, constants, and steps in evaluation order.
pub struct Plan {
    shape: Vec<u64>,
    dtype: DType,
    leaves: Vec<Leaf>,
    consts: Vec<(DType, Vec<u8>)>,
    steps: Vec<Step>,
    root: Operand,
    /// Expression nodes that were shared instead of recomputed.
    shared: usize,
}

struct Builder {
    leaves: Vec<Leaf>,
    consts: Vec<(DType, Vec<u8>)>,
    steps: Vec<Step>,
    by_ptr: HashMap<usize, Operand>,
    by_key: HashMap<String, Operand>,
    shared: usize,
}

impl Builder {
    /// The operand for source `s`: a leaf for stored sources, the compiled node for expressions;
    /// each distinct source (by identity) is compiled once.
    fn operand(&mut self, s: &Src) -> Result<Operand> {
        let ptr = Arc::as_ptr(s) as *const () as usize;
        if let Some(&o) = self.by_ptr.get(&ptr) {
            self.shared += 1;
            return Ok(o);
        }
        let o = match as_node(s) {
            None => {
                self.leaves.push(Leaf {
                    src: s.clone(),
                    label: label(s),
                });
                Operand::Leaf(self.leaves.len() - 1)
            }
            Some(n) => self.node(n)?,
        };
        self.by_ptr.insert(ptr, o);
        Ok(o)
    }

    /// Compiles expression node `n`; nodes equal in structure to one already compiled share it.
    fn node(&mut self, n: &Node) -> Result<Operand> {
        let dtype = n.info.dtype;
        let mut fuse = Fusable::No;
        let (key, f, inputs, what) = match &n.op {
            NodeOp::Const(bytes) => {
                let key = format!("const {dtype} {bytes:?}");
                if let Some(&o) = self.by_key.get(&key) {
                    return Ok(o);
                }
                self.consts.push((dtype, bytes.clone()));
                let o = Operand::Const(self.consts.len() - 1);
                self.by_key.insert(key, o);
                return Ok(o);
            }
            NodeOp::Unary(op, a) => {
                let a = self.operand(a)?;
                let cd = n_dtype_of(self, a);
                (
                    format!("{op:?} {a:?}"),
                    kernels::unary(*op, cd),
                    vec![a],
                    op.name().to_string(),
                )
            }
            NodeOp::Binary(op, a, b) => {
                let a = self.operand(a)?;
                let b = self.operand(b)?;
                let cd = n_dtype_of(self, a);
                let key = format!("{op:?} {a:?} {b:?}");
                let power = match (op, self.const_value(b, cd)) {
                    (BinOp::Pow, Some(e)) if !matches!(a, Operand::Const(_)) => {
                        kernels::pow_scalar(cd, e).map(|(f, name)| (f, name.to_string()))
                    }
                    _ => None,
                };
                match power {
                    Some((f, what)) => (key, f, vec![a], what),
                    None => {
                        fuse = self.fusable(*op, cd, a, b);
                        (
                            key,
                            kernels::binary(*op, cd),
                            vec![a, b],
                            op.name().to_string(),
                        )
                    }
                }
            }
            NodeOp::Where(c, a, b) => {
                let c = self.operand(c)?;
                let a = self.operand(a)?;
                let b = self.operand(b)?;
                (
                    format!("where {c:?} {a:?} {b:?}"),
                    kernels::select(dtype),
                    vec![c, a, b],
                    "where".to_string(),
                )
            }
            NodeOp::Cast(a) => {
                let a = self.operand(a)?;
                let from = n_dtype_of(self, a);
                (
                    format!("cast {dtype} {a:?}"),
                    kernels::convert(from, dtype),
                    vec![a],
                    format!("astype({dtype})"),
                )
            }
        };
        if let Some(&o) = self.by_key.get(&key) {
            self.shared += 1;
            return Ok(o);
        }
        self.steps.push(Step {
            f,
            inputs,
            dtype,
            label: what,
            fuse,
            pre: [Affine::IDENTITY; 2],
        });
        let o = Operand::Step(self.steps.len() - 1);
        self.by_key.insert(key, o);
        Ok(o)
    }
}

impl Builder {
    /// A constant's value as `f64`, when it is a constant of `dtype` (integers converted, which
    /// may round past 2^53).
    fn const_value(&self, o: Operand, dtype: DType) -> Option<f64> {
        let Operand::Const(i) = o else { return None };
        let (d, bytes) = &self.consts[i];
        if *d != dtype || bytes.len() != dtype.size() {
            return None;
        }
        Some(crate::with_dtype!(dtype, T => {
            crate::Element::to_f64(bytemuck::pod_read_unaligned::<T>(bytes))
        }))
    }

    /// A constant's value, when it is a finite float of `dtype`.
    fn finite_const(&self, o: Operand, dtype: DType) -> Option<f64> {
        let Operand::Const(i) = o else { return None };
        let (d, bytes) = &self.consts[i];
        if *d != dtype {
            return None;
        }
        let v = match dtype {
            DType::F64 => f64::from_ne_bytes(bytes.as_slice().try_into().ok()?),
            DType::F32 => f64::from(f32::from_ne_bytes(bytes.as_slice().try_into().ok()?)),
            _ => return None,
        };
        v.is_finite().then_some(v)
    }

    /// How `a op b` computed in float `dtype` can be fused: with a finite scalar on one side,
    /// `+ - *` are scalar transforms of the other side (`x - c == x + (-c)` and
    /// `c - x == x*(-1) + c` exactly in IEEE arithmetic; NaN and infinite scalars are left
    /// alone); between two arrays, `+ - * /` can absorb such transforms.
    fn fusable(&self, op: BinOp, dtype: DType, a: Operand, b: Operand) -> Fusable {
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Fusable::No;
        }
        let (ca, cb) = (self.finite_const(a, dtype), self.finite_const(b, dtype));
        let t = match (op, ca, cb) {
            (_, Some(_), Some(_)) => return Fusable::No,
            (BinOp::Add, None, Some(c)) => Some((a, Affine::add(c))),
            (BinOp::Add, Some(c), None) => Some((b, Affine::add(c))),
            (BinOp::Sub, None, Some(c)) => Some((a, Affine::add(-c))),
            (BinOp::Sub, Some(c), None) => Some((b, Affine { m: -1.0, c })),
            (BinOp::Mul, None, Some(m)) => Some((a, Affine::mul(m))),
            (BinOp::Mul, Some(m), None) => Some((b, Affine::mul(m))),
            _ => None,
        };
        match t {
            Some((x, t)) if !matches!(x, Operand::Const(_)) => Fusable::Affine(x, t),
            _ if matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div) => {
                Fusable::Arith(op)
            }
            _ => Fusable::No,
        }
    }

    /// Folds scalar transforms into the steps that consume them, so `a*2 + b` runs as one loop
    /// over `a` and `b`. A transform step is folded only when its result has exactly one use (and
    /// is not the result), into a float `+ - * /` step, or into another transform when the two
    /// compose exactly; the folded step is dropped and the rest renumbered. Every fused loop
    /// performs the same IEEE operations in the same order as the steps it replaces.
    fn fuse(&mut self, root: &mut Operand) {
        let n = self.steps.len();
        let mut uses = vec![0usize; n];
        for st in &self.steps {
            for o in &st.inputs {
                if let Operand::Step(j) = *o {
                    uses[j] += 1;
                }
            }
        }
        if let Operand::Step(j) = *root {
            uses[j] += 1;
        }
        let mut dead = vec![false; n];
        // The transform of step `j` if it can be folded into its single consumer.
        let foldable = |steps: &[Step], dead: &[bool], o: Operand, dtype: DType| match o {
            Operand::Step(j) if uses[j] == 1 && !dead[j] && steps[j].dtype == dtype => {
                match steps[j].fuse {
                    Fusable::Affine(x, t) => Some((j, x, t)),
                    _ => None,
                }
            }
            _ => None,
        };
        for k in 0..n {
            let dtype = self.steps[k].dtype;
            match self.steps[k].fuse {
                Fusable::Affine(x, outer) => {
                    let Some((j, inner_x, inner)) = foldable(&self.steps, &dead, x, dtype) else {
                        continue;
                    };
                    let Some(t) = inner.then(outer) else { continue };
                    let Some(f) = kernels::affine_unary(dtype, t) else {
                        continue;
                    };
                    dead[j] = true;
                    let st = &mut self.steps[k];
                    st.fuse = Fusable::Affine(inner_x, t);
                    st.inputs = vec![inner_x];
                    st.pre = [t, Affine::IDENTITY];
                    st.label = "affine".into();
                    st.f = f;
                }
                Fusable::Arith(op) => {
                    let mut inputs = self.steps[k].inputs.clone();
                    let mut pre = [Affine::IDENTITY; 2];
                    let mut folded = Vec::new();
                    for s in 0..2 {
                        // The same step on both sides has two uses, so it is never folded.
                        if let Some((j, x, t)) = foldable(&self.steps, &dead, inputs[s], dtype) {
                            inputs[s] = x;
                            pre[s] = t;
                            folded.push(j);
                        }
                    }
                    if folded.is_empty() {
                        continue;
                    }
                    let Some(f) = kernels::affine_binary(op, dtype, pre[0], pre[1]) else {
                        continue;
                    };
                    for j in folded {
                        dead[j] = true;
                    }
                    let st = &mut self.steps[k];
                    st.inputs = inputs;
                    st.pre = pre;
                    st.f = f;
                }
                Fusable::No => {}
            }
        }
        // Drop the folded steps and renumber the rest.
        let mut new_index = vec![usize::MAX; n];
        let mut kept = Vec::with_capacity(n);
        for (i, st) in std::mem::take(&mut self.steps).into_iter().enumerate() {
            if !dead[i] {
                new_index[i] = kept.len();
                kept.push(st);
            }
        }
        let remap = |o: &mut Operand| {
            if let Operand::Step(j) = *o {
                *o = Operand::Step(new_index[j]);
            }
        };
        for st in &mut kept {
            st.inputs.iter_mut().for_each(remap);
            if let Fusable::Affine(x, t) = st.fuse {
                let mut x = x;
                remap(&mut x);
                st.fuse = Fusable::Affine(x, t);
            }
        }
        remap(root);
        self.steps = kept;
        // Constants only the folded steps read would still be filled into a tile per region.
        let mut used = vec![false; self.consts.len()];
        for o in self
            .steps
            .iter()
            .flat_map(|st| st.inputs.iter())
            .chain([&*root])
        {
            if let Operand::Const(i) = *o {
                used[i] = true;
            }
        }
        let mut const_index = vec![usize::MAX; used.len()];
        let mut consts = Vec::with_capacity(used.len());
        for (i, c) in std::mem::take(&mut self.consts).into_iter().enumerate() {
            if used[i] {
                const_index[i] = consts.len();
                consts.push(c);
            }
        }
        let remap_const = |o: &mut Operand| {
            if let Operand::Const(i) = *o {
                *o = Operand::Const(const_index[i]);
            }
        };
        for st in &mut self.steps {
            st.inputs.iter_mut().for_each(remap_const);
            if let Fusable::Affine(mut x, t) = st.fuse {
                remap_const(&mut x);
                st.fuse = Fusable::Affine(x, t);
            }
        }
        remap_const(root);
        self.consts = consts;
    }
}

fn n_dtype_of(b: &Builder, o: Operand) -> DType {
    match o {
        Operand::Leaf(i) => b.leaves[i].src.info().dtype,
        Operand::Const(i) => b.consts[i].0,
        Operand::Step(i) => b.steps[i].dtype,
    }
}

impl Plan {
    fn build(node: &Node) -> Result<Plan> {
        Plan::build_with(node, true)
    }

    /// [`Plan::build`], optionally without folding scalar transforms into their consumers (the
    /// tests compare both, bit for bit).
    fn build_with(node: &Node, fuse: bool) -> Result<Plan> {
        let mut b = Builder {
            leaves: Vec::new(),
            consts: Vec::new(),
            steps: Vec::new(),
            by_ptr: HashMap::new(),
            by_key: HashMap::new(),
            shared: 0,
        };
        let mut root = b.node(node)?;
        if fuse {
            b.fuse(&mut root);
        }
        Ok(Plan {
            shape: node.info.shape.clone(),
            dtype: node.info.dtype,
            leaves: b.leaves,
            consts: b.consts,
            steps: b.steps,
            root,
            shared: b.shared,
        })
    }

    /// Bytes one worker holds while evaluating a region of `elems` elements: each leaf's data
    /// (read whole, expanded when broadcast), the output, and one tile per step.
    pub fn bytes_per_region(&self, elems: u64) -> u64 {
        let leaves: u64 = self
            .leaves
            .iter()
            .map(|l| elems * l.src.info().dtype.size() as u64)
            .sum();
        let tiles = (self.steps.len() + self.consts.len()) as u64 * (TILE as u64 * 8);
        leaves + elems * self.dtype.size() as u64 + tiles
    }

    /// A human-readable description of the steps.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let name = |o: &Operand| match o {
            Operand::Leaf(i) => format!("L{i}"),
            Operand::Const(i) => format!("C{i}"),
            Operand::Step(i) => format!("S{i}"),
        };
        for (i, l) in self.leaves.iter().enumerate() {
            let info = l.src.info();
            let _ = writeln!(
                s,
                "  L{i} = read {} ({} {}, {} chunks{})",
                l.label,
                info.dtype,
                shape_str(&info.shape),
                info.layout.num_chunks(),
                if info.shape != self.shape {
                    ", broadcast"
                } else {
                    ""
                }
            );
        }
        for (i, (d, bytes)) in self.consts.iter().enumerate() {
            let v = crate::with_dtype!(*d, T => {
                let mut w = [0u64; 1];
                bytemuck::cast_slice_mut::<u64, u8>(&mut w)[..bytes.len()].copy_from_slice(bytes);
                let t: &[T] = bytemuck::cast_slice(&bytemuck::cast_slice::<u64, u8>(&w)[..bytes.len()]);
                format!("{:?}", t[0])
            });
            let _ = writeln!(s, "  C{i} = {v} ({d}, one tile)");
        }
        for (i, st) in self.steps.iter().enumerate() {
            let args: Vec<String> = st
                .inputs
                .iter()
                .zip(st.pre.iter().chain(std::iter::repeat(&Affine::IDENTITY)))
                .map(|(o, t)| t.describe(&name(o)))
                .collect();
            let _ = writeln!(
                s,
                "  S{i} = {}({}) -> {}{}",
                st.label,
                args.join(", "),
                st.dtype,
                if Operand::Step(i) == self.root {
                    "   [result]"
                } else {
                    ""
                }
            );
        }
        if self.shared > 0 {
            let _ = writeln!(s, "  ({} common subexpression(s) shared)", self.shared);
        }
        s
    }

    /// Number of fused element-wise steps.
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// The sources the plan reads.
    pub fn leaves(&self) -> Vec<Src> {
        self.leaves.iter().map(|l| l.src.clone()).collect()
    }

    fn run(&self, region: &Region, sink: &mut dyn FnMut(usize, &[u8]) -> Result<()>) -> Result<()> {
        let n = region.numel() as usize;
        if n == 0 {
            return Ok(());
        }
        // Read every leaf once for the whole region (zero-copy when the region is one of its
        // chunks), expanding broadcast operands.
        let mut leaf_data = Vec::with_capacity(self.leaves.len());
        for l in &self.leaves {
            leaf_data.push(read_broadcast(&l.src, region, &self.shape)?);
        }
        let tile = TILE.min(n);
        let mut const_tiles: Vec<Vec<u64>> = Vec::with_capacity(self.consts.len());
        for (d, bytes) in &self.consts {
            let mut t = vec![0u64; (tile * d.size()).div_ceil(8)];
            kernels::fill(
                &mut bytemuck::cast_slice_mut::<u64, u8>(&mut t)[..tile * d.size()],
                bytes,
            );
            const_tiles.push(t);
        }
        let mut step_tiles: Vec<Vec<u64>> = self
            .steps
            .iter()
            .map(|s| vec![0u64; (tile * s.dtype.size()).div_ceil(8)])
            .collect();
        let mut off = 0;
        while off < n {
            let len = tile.min(n - off);
            for (i, st) in self.steps.iter().enumerate() {
                let (done, rest) = step_tiles.split_at_mut(i);
                let out =
                    &mut bytemuck::cast_slice_mut::<u64, u8>(&mut rest[0])[..len * st.dtype.size()];
                let mut ins: [&[u8]; 3] = [&[], &[], &[]];
                for (k, o) in st.inputs.iter().enumerate() {
                    ins[k] = match *o {
                        Operand::Leaf(j) => {
                            let es = self.leaves[j].src.info().dtype.size();
                            &leaf_data[j].bytes()[off * es..(off + len) * es]
                        }
                        Operand::Const(j) => {
                            let es = self.consts[j].0.size();
                            &bytemuck::cast_slice::<u64, u8>(&const_tiles[j])[..len * es]
                        }
                        Operand::Step(j) => {
                            let es = self.steps[j].dtype.size();
                            &bytemuck::cast_slice::<u64, u8>(&done[j])[..len * es]
                        }
                    };
                }
                (st.f)(&ins[..st.inputs.len()], out)?;
            }
            let es = self.dtype.size();
            let result: &[u8] = match self.root {
                Operand::Step(j) => &bytemuck::cast_slice::<u64, u8>(&step_tiles[j])[..len * es],
                Operand::Leaf(j) => &leaf_data[j].bytes()[off * es..(off + len) * es],
                Operand::Const(j) => &bytemuck::cast_slice::<u64, u8>(&const_tiles[j])[..len * es],
            };
            sink(off, result)?;
            off += len;
        }
        Ok(())
    }
}

/// Reads the part of `src` that broadcasts onto `region` of an array of shape `out_shape`, as a
/// dense buffer of `region.numel()` elements.
pub(crate) fn read_broadcast(src: &Src, region: &Region, out_shape: &[u64]) -> Result<Buffer> {
    let info = src.info();
    let nd = out_shape.len();
    let ld = info.shape.len();
    let mut start = Vec::with_capacity(ld);
    let mut shape = Vec::with_capacity(ld);
    let mut expand = false;
    for j in 0..ld {
        let k = j + nd - ld;
        if info.shape[j] == 1 && out_shape[k] != 1 {
            start.push(0);
            shape.push(1);
            expand |= region.shape[k] != 1;
        } else {
            start.push(region.origin[k]);
            shape.push(region.shape[k]);
        }
    }
    let sub = Region {
        origin: start,
        shape,
    };
    let data = src.read_region(&sub)?;
    if !expand && numel(&sub.shape) == region.numel() {
        return Ok(data);
    }
    // Expand: the source box, padded with leading 1s, broadcast onto the region.
    let es = info.dtype.size();
    let mut src_shape = vec![1u64; nd - ld];
    src_shape.extend_from_slice(&sub.shape);
    let mut out = Buffer::for_overwrite(region.numel() as usize * es)?;
    expand_into(data.bytes(), &src_shape, out.bytes_mut(), &region.shape, es);
    Ok(out)
}

/// Broadcast copy of a dense C-order box `src` (dims 1 or equal to `dst_shape`'s) into `dst`.
fn expand_into(src: &[u8], src_shape: &[u64], dst: &mut [u8], dst_shape: &[u64], es: usize) {
    if dst_shape.is_empty() {
        dst[..es].copy_from_slice(&src[..es]);
        return;
    }
    let d0 = dst_shape[0] as usize;
    let s0 = src_shape[0] as usize;
    let dst_inner = numel(&dst_shape[1..]) as usize * es;
    let src_inner = numel(&src_shape[1..]) as usize * es;
    if dst_shape.len() == 1 {
        if s0 == d0 {
            dst[..d0 * es].copy_from_slice(&src[..d0 * es]);
        } else {
            kernels::fill(&mut dst[..d0 * es], &src[..es]);
        }
        return;
    }
    for i in 0..d0 {
        if s0 == 1 && i > 0 {
            // Same source row: copy the first expanded row.
            let (first, rest) = dst.split_at_mut(i * dst_inner);
            rest[..dst_inner].copy_from_slice(&first[..dst_inner]);
            continue;
        }
        let s = &src[i * src_inner..(i + 1) * src_inner];
        let d = &mut dst[i * dst_inner..(i + 1) * dst_inner];
        expand_into(s, &src_shape[1..], d, &dst_shape[1..], es);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::mem::MemArray;
    use proptest::prelude::*;

    /// A random expression over leaves `a`, `b` (indices into `leaves`) and float scalars.
    #[derive(Clone, Debug)]
    enum E {
        Leaf(usize),
        Bin(BinOp, Box<E>, Box<E>),
        Scalar(BinOp, Box<E>, f64, bool),
        Neg(Box<E>),
        Sqrt(Box<E>),
    }

    fn scalar() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(1.0),
            Just(-1.0),
            Just(2.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(1e-310),
            -1e3f64..1e3,
        ]
    }

    fn expr() -> impl Strategy<Value = E> {
        let leaf = (0..2usize).prop_map(E::Leaf);
        leaf.prop_recursive(4, 24, 2, |inner| {
            let op = prop_oneof![
                Just(BinOp::Add),
                Just(BinOp::Sub),
                Just(BinOp::Mul),
                Just(BinOp::Div),
                Just(BinOp::Maximum),
            ];
            prop_oneof![
                (op.clone(), inner.clone(), inner.clone()).prop_map(|(o, x, y)| E::Bin(
                    o,
                    Box::new(x),
                    Box::new(y)
                )),
                (op, inner.clone(), scalar(), any::<bool>()).prop_map(|(o, x, c, left)| E::Scalar(
                    o,
                    Box::new(x),
                    c,
                    left
                )),
                inner.clone().prop_map(|x| E::Neg(Box::new(x))),
                inner.prop_map(|x| E::Sqrt(Box::new(x))),
            ]
        })
    }

    fn build(e: &E, leaves: &[Src], dtype: DType) -> Src {
        match e {
            E::Leaf(i) => leaves[*i].clone(),
            E::Bin(op, x, y) => {
                Node::binary(*op, &build(x, leaves, dtype), &build(y, leaves, dtype)).unwrap()
            }
            E::Scalar(op, x, c, left) => {
                let c = Node::constant(dtype, ConstValue::Float(*c));
                let x = build(x, leaves, dtype);
                if *left {
                    Node::binary(*op, &c, &x).unwrap()
                } else {
                    Node::binary(*op, &x, &c).unwrap()
                }
            }
            E::Neg(x) => Node::unary(UnOp::Neg, &build(x, leaves, dtype)).unwrap(),
            E::Sqrt(x) => Node::unary(UnOp::Sqrt, &build(x, leaves, dtype)).unwrap(),
        }
    }

    fn eval(plan: &Plan, n: usize, esize: usize) -> Vec<u8> {
        let mut out = vec![0u8; n * esize];
        plan.run(&Region::full(&[n as u64]), &mut |off, tile| {
            out[off * esize..off * esize + tile.len()].copy_from_slice(tile);
            Ok(())
        })
        .unwrap();
        out
    }

    fn values() -> impl Strategy<Value = Vec<f64>> {
        let special = prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(-f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(5e-324),
            Just(1e308),
        ];
        prop::collection::vec(prop_oneof![3 => -1e6f64..1e6, 1 => special], 1..9000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(160))]

        /// Folding scalar transforms into their consumers gives the unfused steps' bits exactly,
        /// NaN payloads and signed zeros included, for f64 and f32.
        #[test]
        fn fused_plan_is_bit_identical_to_unfused(e in expr(), xs in values(), f32s in any::<bool>()) {
            let n = xs.len();
            let ys: Vec<f64> = xs.iter().rev().map(|v| v * 0.5 - 3.0).collect();
            let (dtype, leaves): (DType, Vec<Src>) = if f32s {
                let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
                (DType::F32, vec![
                    Arc::new(MemArray::from_vec("a", vec![n as u64], &f(&xs)).unwrap()),
                    Arc::new(MemArray::from_vec("b", vec![n as u64], &f(&ys)).unwrap()),
                ])
            } else {
                (DType::F64, vec![
                    Arc::new(MemArray::from_vec("a", vec![n as u64], &xs).unwrap()),
                    Arc::new(MemArray::from_vec("b", vec![n as u64], &ys).unwrap()),
                ])
            };
            let src = build(&e, &leaves, dtype);
            let Some(node) = as_node(&src) else { return Ok(()) };
            let fused = Plan::build_with(node, true).unwrap();
            let plain = Plan::build_with(node, false).unwrap();
            prop_assert!(fused.num_steps() <= plain.num_steps());
            let es = node.info.dtype.size();
            let (f, p) = (eval(&fused, n, es), eval(&plain, n, es));
            // Bits equal, or both NaN: which of two NaN operands an add returns is up to the
            // compiled loop (LLVM may commute it), in NumPy's loops as in ours.
            let same = |i: usize| match node.info.dtype {
                DType::F32 => {
                    let (x, y): (f32, f32) = (bytemuck::pod_read_unaligned(&f[i * 4..i * 4 + 4]),
                        bytemuck::pod_read_unaligned(&p[i * 4..i * 4 + 4]));
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                }
                _ => {
                    let (x, y): (f64, f64) = (bytemuck::pod_read_unaligned(&f[i * 8..i * 8 + 8]),
                        bytemuck::pod_read_unaligned(&p[i * 8..i * 8 + 8]));
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
                }
            };
            for i in 0..n {
                prop_assert!(same(i), "element {}: {}", i, fused.describe());
            }
        }
    }

    #[test]
    fn scalar_transforms_fold_into_their_consumer() {
        let v: Vec<f64> = (0..5000).map(|i| i as f64 - 17.5).collect();
        let a: Src = Arc::new(MemArray::from_vec("a", vec![5000], &v).unwrap());
        let b: Src = Arc::new(MemArray::from_vec("b", vec![5000], &v).unwrap());
        let c = |x: f64| Node::constant(DType::F64, ConstValue::Float(x));
        // a*2 + b: one loop.
        let e = Node::binary(
            BinOp::Add,
            &Node::binary(BinOp::Mul, &a, &c(2.0)).unwrap(),
            &b,
        )
        .unwrap();
        let p = as_node(&e).unwrap().plan().unwrap();
        assert_eq!(p.num_steps(), 1, "{}", p.describe());
        assert!(
            p.describe().contains("S0 = +(L0*2.0, L1)"),
            "{}",
            p.describe()
        );
        assert!(
            !p.describe().contains("C0"),
            "folded constant kept: {}",
            p.describe()
        );
        // (1 - a) * (b*3 + 0.5): both sides fold, the second as one composed transform.
        let l = Node::binary(BinOp::Sub, &c(1.0), &a).unwrap();
        let r = Node::binary(
            BinOp::Add,
            &Node::binary(BinOp::Mul, &b, &c(3.0)).unwrap(),
            &c(0.5),
        )
        .unwrap();
        let e = Node::binary(BinOp::Mul, &l, &r).unwrap();
        let p = as_node(&e).unwrap().plan().unwrap();
        assert_eq!(p.num_steps(), 1, "{}", p.describe());
        let got = eval(p, 5000, 8);
        let want: Vec<f64> = v.iter().map(|&x| (1.0 - x) * (x * 3.0 + 0.5)).collect();
        assert_eq!(got, bytemuck::cast_slice::<f64, u8>(&want));
        // A transform used twice, or by a non-arithmetic step, is computed once, as before.
        let t = Node::binary(BinOp::Mul, &a, &c(2.0)).unwrap();
        let e = Node::binary(BinOp::Add, &t, &t).unwrap();
        assert_eq!(as_node(&e).unwrap().plan().unwrap().num_steps(), 2);
        let e = Node::unary(UnOp::Sqrt, &t).unwrap();
        assert_eq!(as_node(&e).unwrap().plan().unwrap().num_steps(), 2);
        // NaN scalars are never folded (which NaN propagates must not change).
        let e = Node::binary(
            BinOp::Add,
            &Node::binary(BinOp::Mul, &a, &c(f64::NAN)).unwrap(),
            &b,
        )
        .unwrap();
        assert_eq!(as_node(&e).unwrap().plan().unwrap().num_steps(), 2);
    }
}
