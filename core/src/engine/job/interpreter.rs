//! The interpreter: where the job is in its [`Program`] ([`Pc`]), how much of the current
//! operation one step takes (the budget rule), and where each activation buffer lies.
//!
//! The budget rule, the same for every operation: an operation is a count of units (tokens,
//! weight rows, attention tiles, texts), each with a cost in work units; a step takes as many
//! units as fit what is left of its budget, moves on to the next operation when one is done,
//! and ends when the next unit does not fit — except that a step's first unit is always taken,
//! so that every step makes progress. A step therefore does at most its budget, or one unit
//! when a single unit costs more.

use super::parts::Parallel;
use super::*;
use crate::engine::program::{Block, Buf, Kind, Op, Tensor};
use checked::mul;

/// A position in the program: the operation, and how far into it the job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pc {
    section: Section,
    /// The block of the layer.
    block: usize,
    /// The block's head group or slab.
    pub iter: usize,
    /// The operation within the block (or section).
    op: usize,
    /// The text, for operations done text by text.
    pub text: usize,
    /// Units of the operation done (of the text, for those done text by text).
    pub unit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Embed,
    Layer(usize),
    Head,
}

impl Pc {
    /// The operation the position is in (its first unit, of its first text).
    pub fn operation(self) -> Pc {
        Pc { text: 0, unit: 0, ..self }
    }

    /// The layer the position is in, if any.
    pub fn layer(&self) -> Option<usize> {
        match self.section {
            Section::Layer(i) => Some(i),
            Section::Embed | Section::Head => None,
        }
    }
}

/// Where a buffer's values for the current head group or slab lie: in the hidden states or
/// the wide region, from `offset` on, `stride` floats per token; the selection is the columns
/// `[col, col + width)` of each token's row, and holds the rows (or elements) `[first, first +
/// width)` of the weights (or bias) that compute it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub in_wide: bool,
    pub offset: usize,
    pub stride: usize,
    pub col: usize,
    pub width: usize,
    pub first: usize,
}

impl Place {
    /// The floats of its buffer the place spans over `n` tokens, from its first selected value
    /// to its last (saturating).
    fn extent(&self, n: usize) -> core::ops::Range<usize> {
        let start = self.offset.saturating_add(self.col);
        let last_row = n.saturating_sub(1).saturating_mul(self.stride);
        let end = match n {
            0 => start,
            _ => start.saturating_add(last_row).saturating_add(self.width),
        };
        start..end
    }

    /// Whether the two places share a float over `n` tokens.
    fn overlaps(&self, other: &Place, n: usize) -> bool {
        let (a, b) = (self.extent(n), other.extent(n));
        self.in_wide == other.in_wide && a.start < b.end && b.start < a.end
    }
}

/// The input the int8 region holds ([`Mode::Fast`]): where its f32 values lie, and the product
/// that quantized them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Q8Held {
    pub src: Place,
    pub by: Pc,
    /// Tokens whose blocks have a residual (each weight row multiplies them twice).
    pub refined: usize,
}

impl<'a> Job<'a> {
    /// The program's first operation with work to do.
    pub(super) fn first_pc(&mut self) -> Result<Pc> {
        let pc = Pc { section: Section::Embed, block: 0, iter: 0, op: 0, text: 0, unit: 0 };
        match self.settle(pc)? {
            Phase::Run(pc) => Ok(pc),
            _ => Err(Error::InvalidState),
        }
    }

    /// The operation at `pc`.
    pub(super) fn op_at(&self, pc: Pc) -> Option<Op> {
        let ops = match pc.section {
            Section::Embed => self.program.embed,
            Section::Layer(_) => self.program.layer.get(pc.block)?.ops(),
            Section::Head => self.program.head,
        };
        ops.get(pc.op).copied()
    }

    /// Does the next units of the operation at `pc`, as many as fit `left` work units (at least
    /// one when `first`), and moves on. Returns the units spent, or `None` when not even one
    /// unit fits.
    pub(super) fn run<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        pc: Pc,
        left: u64,
        first: bool,
        par: &dyn Parallel,
    ) -> Result<Option<u64>> {
        let op = self.op_at(pc).ok_or(Error::InvalidState)?;
        let cost = self.unit_cost(op, pc)?.max(1);
        let fit = usize::try_from(left.checked_div(cost).unwrap_or(0)).unwrap_or(usize::MAX);
        if fit == 0 && !first {
            return Ok(None);
        }
        let remaining = sub(self.extent(op, pc)?, pc.unit)?;
        let take = fit.min(remaining).min(self.most_units(op, pc)?).max(1);
        self.execute(io, op, pc, take, par)?;
        self.phase = self.settle(Pc { unit: add(pc.unit, take)?, ..pc })?;
        Ok(Some(cost.saturating_mul(take as u64)))
    }

    /// The first position from `pc` on with work left (the phase to be in there).
    fn settle(&mut self, mut pc: Pc) -> Result<Phase> {
        loop {
            let op = self.op_at(pc).ok_or(Error::InvalidState)?;
            if pc.unit < self.extent(op, pc)? {
                return Ok(Phase::Run(pc));
            }
            let next_text = add(pc.text, 1)?;
            if per_text(op.kind) && next_text < self.n_texts {
                pc = Pc { text: next_text, unit: 0, ..pc };
                continue;
            }
            match self.next_op(pc)? {
                Some(next) => pc = next,
                None => return Ok(Phase::Done),
            }
        }
    }

    /// The operation after the one at `pc` (`None` after the last), entering layers as it
    /// goes.
    fn next_op(&mut self, pc: Pc) -> Result<Option<Pc>> {
        let next = Pc { op: add(pc.op, 1)?, text: 0, unit: 0, ..pc };
        Ok(Some(match pc.section {
            Section::Embed if next.op < self.program.embed.len() => next,
            Section::Embed => return self.enter_layer(0).map(Some),
            Section::Layer(index) => {
                let block = self.program.layer.get(pc.block).ok_or(Error::InvalidState)?;
                if next.op < block.ops().len() {
                    next
                } else if add(pc.iter, 1)? < self.iterations(block) {
                    Pc { iter: add(pc.iter, 1)?, op: 0, ..next }
                } else if add(pc.block, 1)? < self.program.layer.len() {
                    Pc { block: add(pc.block, 1)?, iter: 0, op: 0, ..next }
                } else {
                    return self.enter_layer(add(index, 1)?).map(Some);
                }
            }
            Section::Head if next.op < self.program.head.len() => next,
            Section::Head => return Ok(None),
        }))
    }

    /// The start of layer `index` (its tensors looked up), or of the head after the last layer.
    fn enter_layer(&mut self, index: usize) -> Result<Pc> {
        let start = Pc { section: Section::Head, block: 0, iter: 0, op: 0, text: 0, unit: 0 };
        if index >= self.model.hparams().n_layer {
            self.layer = None;
            return Ok(start);
        }
        self.layer = Some(*self.model.layer(index)?);
        Ok(Pc { section: Section::Layer(index), ..start })
    }

    /// How often `block` runs in a layer.
    fn iterations(&self, block: &Block) -> usize {
        let hp = self.model.hparams();
        match block {
            Block::Once(_) => 1,
            Block::PerHeadGroup(_) => hp.n_head_kv.div_ceil(self.layout.group.max(1)),
            Block::PerSlab(_) => hp.n_ff.div_ceil(self.layout.slab.max(1)),
        }
    }

    /// The units of `op` at `pc` (of `pc.text`, for operations done text by text).
    fn extent(&self, op: Op, pc: Pc) -> Result<usize> {
        let n = self.n_tokens;
        Ok(match op.kind {
            Kind::Embed { .. } | Kind::Init { .. } | Kind::Copy { .. } | Kind::LayerNorm { .. } => n,
            Kind::RmsNorm { .. } | Kind::Add { .. } | Kind::Rope | Kind::Act(_) => n,
            Kind::AddBias { bias: t, .. } | Kind::HeadNorm { weight: t, .. } => match self.tensor(t) {
                Some(_) => n,
                None => 0,
            },
            Kind::MatMul { w, src, dst } => add(self.matmul_lead(w, src, pc)?, self.place(dst, pc)?.width)?,
            Kind::Dense { w, .. } => self.tensor(w).map_or(0, |w| w.rows as usize),
            Kind::Attention => self.attention_tiles(pc)?,
            Kind::Pool => self.pool_units(pc.text)?,
            Kind::Normalize => 1,
        })
    }

    /// The work units of one unit of `op` at `pc` (the constants at the top of `job`).
    fn unit_cost(&self, op: Op, pc: Pc) -> Result<u64> {
        let e = self.plan.n_embd;
        Ok(match op.kind {
            Kind::Embed { .. } => units(EMBED_COST + FINITE_COST, &[e]),
            Kind::Init { dst, .. } | Kind::AddBias { dst, .. } | Kind::Copy { dst, .. } => {
                units(BIAS_COST, &[self.place(dst, pc)?.width])
            }
            Kind::Add { dst, .. } => units(BIAS_COST + FINITE_COST, &[self.place(dst, pc)?.width]),
            Kind::LayerNorm { .. } | Kind::RmsNorm { .. } => units(NORM_COST + FINITE_COST, &[e]),
            Kind::HeadNorm { dst, .. } => units(NORM_COST + FINITE_COST, &[self.place(dst, pc)?.width]),
            Kind::MatMul { w, src, dst } => {
                let k = self.place(src, pc)?.width;
                let lead = self.matmul_lead(w, src, pc)?;
                let check = if self.matmul_check(src, dst, pc).is_some() { FINITE_COST } else { 0 };
                // A refined token (its blocks have a residual) is multiplied twice.
                let refined = match self.tensor(w) {
                    Some(w) => self.q8_refined(&w, self.place(src, pc)?),
                    None => 0,
                };
                let int = units(1, &[add(self.n_tokens, refined)?]).saturating_mul(k as u64);
                let row = int
                    .saturating_add(units(check, &[self.n_tokens]))
                    .saturating_add(self.row_read_cost(w, src, pc)?);
                match lead {
                    0 => row,
                    _ if pc.unit < lead => units(QUANTIZE_COST, &[k]),
                    _ => row.saturating_add(units(PANEL_COST, &[k])),
                }
            }
            Kind::Rope => {
                let (q, k) = (self.place(Buf::Q, pc)?.width, self.place(Buf::K, pc)?.width);
                let pairs = units(ROPE_PAIR_COST, &[self.model.hparams().n_rot / 2]);
                pairs.saturating_add(units(ROPE_COST + FINITE_COST, &[add(q, k)?]))
            }
            Kind::Attention => self.attention_tile_cost(pc.text)?,
            Kind::Act(_) => units(ACT_COST + FINITE_COST, &[self.place(Buf::Up, pc)?.width]),
            Kind::Pool => units(POOL_COST, &[e]),
            Kind::Dense { w, .. } => {
                let k = self.tensor(w).map_or(0, |w| w.cols as u64);
                units(1, &[self.n_texts]).saturating_mul(k.saturating_add(FINITE_COST))
            }
            Kind::Normalize => units(FINITE_COST, &[e]),
        })
    }

    /// The read cost of one weight row of the product of `w` over `src`: a product over some of
    /// the row's columns (an FFN slab, a head group) reads each row on its own
    /// ([`read_rows`](super::matmul::read_rows)); whole rows are read in one call.
    fn row_read_cost(&self, w: Tensor, src: Buf, pc: Pc) -> Result<u64> {
        let w = self.tensor(w).ok_or(Error::InvalidState)?;
        let cols = self.place(src, pc)?;
        let (_, span) = w.col_span(cols.first, add(cols.first, cols.width)?);
        Ok(if span == w.row_bytes() { 0 } else { ROW_READ_COST })
    }

    /// The most units of `op` one call can do whatever the budget: the weight rows that fit
    /// the chunk buffer (the tokens left to quantize, on the int8 path's first units).
    fn most_units(&self, op: Op, pc: Pc) -> Result<usize> {
        Ok(match op.kind {
            Kind::MatMul { w, src, .. } => {
                let lead = self.matmul_lead(w, src, pc)?;
                if pc.unit < lead {
                    return sub(lead, pc.unit);
                }
                let w = self.tensor(w).ok_or(Error::InvalidState)?;
                let cols = self.place(src, pc)?;
                let (_, span) = w.col_span(cols.first, add(cols.first, cols.width)?);
                self.r.chunk.len().checked_div(span).unwrap_or(0).max(1)
            }
            Kind::Dense { w, .. } => {
                let w = self.tensor(w).ok_or(Error::InvalidState)?;
                self.r.chunk.len().checked_div(w.row_bytes()).unwrap_or(0).max(1)
            }
            _ => usize::MAX,
        })
    }

    /// Does units `[pc.unit, pc.unit + count)` of `op`.
    fn execute<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        op: Op,
        pc: Pc,
        count: usize,
        par: &dyn Parallel,
    ) -> Result<()> {
        let tokens = span(pc.unit, count)?;
        self.forget_overwritten(op, pc)?;
        match op.kind {
            Kind::Embed { scaled } => tokens.into_iter().try_for_each(|t| self.embed_token(io, t, scaled)),
            Kind::Init { dst, bias } => self.init(io, self.place(dst, pc)?, self.tensor(bias), tokens),
            Kind::AddBias { dst, bias } => {
                let bias = self.tensor(bias).ok_or(Error::InvalidState)?;
                let dst = self.place(dst, pc)?;
                self.add_vector(io, &bias, (dst.first, add(dst.first, dst.width)?), dst, tokens)
            }
            Kind::Copy { src, dst } => self.copy(self.place(src, pc)?, self.place(dst, pc)?, tokens),
            Kind::LayerNorm { weight, bias, src, dst } => {
                let weight = self.tensor(weight).ok_or(Error::InvalidState)?;
                let bias = self.tensor(bias).ok_or(Error::InvalidState)?;
                self.layer_norm(io, (&weight, &bias), self.place(src, pc)?, self.place(dst, pc)?, tokens)
            }
            Kind::RmsNorm { weight, src, dst } => {
                let weight = self.tensor(weight).ok_or(Error::InvalidState)?;
                self.rms_norm(io, &weight, self.place(src, pc)?, self.place(dst, pc)?, tokens)
            }
            Kind::HeadNorm { weight, dst } => {
                let weight = self.tensor(weight).ok_or(Error::InvalidState)?;
                self.head_norm(io, &weight, self.place(dst, pc)?, tokens)
            }
            Kind::Add { src, dst } => self.add(self.place(src, pc)?, self.place(dst, pc)?, tokens),
            Kind::MatMul { w, src, dst } => {
                let lead = self.matmul_lead(w, src, pc)?;
                if tokens.start < lead {
                    return self.quantize(self.place(src, pc)?, pc, tokens);
                }
                let rows = sub(tokens.start, lead)?..sub(tokens.end, lead)?;
                let w = self.tensor(w).ok_or(Error::InvalidState)?;
                let check = self.matmul_check(src, dst, pc);
                self.matmul(io, &w, (self.place(src, pc)?, self.place(dst, pc)?), rows, check, par)
            }
            Kind::Rope => self.rope(pc, tokens),
            Kind::Attention => self.attention(pc, count),
            Kind::Act(act) => {
                self.activate(act, self.place(Buf::Up, pc)?, self.place(Buf::Gate, pc)?, tokens)
            }
            Kind::Pool => self.pool(pc.text, tokens),
            Kind::Dense { w, into } => {
                let w = self.tensor(w).ok_or(Error::InvalidState)?;
                self.dense(io, &w, into, tokens)
            }
            Kind::Normalize => self.normalize(pc.text),
        }
    }

    /// Forgets the input the int8 region holds when `op` at `pc` writes where its f32 values
    /// lie (conservatively: any float between its first and last value), so that the next
    /// product over them quantizes them again.
    fn forget_overwritten(&mut self, op: Op, pc: Pc) -> Result<()> {
        let Some(held) = self.q8_held else { return Ok(()) };
        let written = match op.kind {
            Kind::Init { dst, .. } | Kind::AddBias { dst, .. } | Kind::Copy { dst, .. } => [Some(dst), None],
            Kind::LayerNorm { dst, .. } | Kind::RmsNorm { dst, .. } | Kind::HeadNorm { dst, .. } => {
                [Some(dst), None]
            }
            Kind::Add { dst, .. } | Kind::MatMul { dst, .. } => [Some(dst), None],
            Kind::Rope => [Some(Buf::Q), Some(Buf::K)],
            Kind::Attention => [Some(Buf::Ctx), None],
            Kind::Act(_) => [Some(Buf::Up), Some(Buf::Gate)],
            Kind::Embed { .. } | Kind::Pool | Kind::Dense { .. } | Kind::Normalize => {
                self.q8_held = None;
                return Ok(());
            }
        };
        for buf in written.into_iter().flatten() {
            if self.place(buf, pc)?.overlaps(&held.src, self.n_tokens) {
                self.q8_held = None;
            }
        }
        Ok(())
    }

    /// Whether a matrix product's sums are checked for finiteness (`Some` with the error to
    /// report): not those the activation checks next, and of sums added up over the slabs only
    /// the last slab's (a NaN or an infinity stays one when finite values are added).
    fn matmul_check(&self, src: Buf, dst: Buf, pc: Pc) -> Option<Error> {
        let last_slab = self.slab_cols(pc.iter).1 >= self.model.hparams().n_ff;
        match (src, dst) {
            (_, Buf::Up | Buf::Gate) => None,
            (Buf::Up, _) if !last_slab => None,
            _ => Some(self.non_finite()),
        }
    }

    /// The tensor `t` names, where the model (or the current layer) has it.
    pub(super) fn tensor(&self, t: Tensor) -> Option<TensorRef> {
        let meta = self.model.meta();
        match t {
            Tensor::Layer(slot) => self.layer.as_ref()?.get(slot),
            Tensor::EmbdNormWeight => meta.embd_norm.map(|n| n.weight),
            Tensor::EmbdNormBias => meta.embd_norm.map(|n| n.bias),
            Tensor::OutputNorm => meta.output_norm,
            Tensor::Dense2 => meta.dense.map(|[d2, _]| d2),
            Tensor::Dense3 => meta.dense.map(|[_, d3]| d3),
        }
    }

    /// Where `buf` lies for the head group or slab at `pc`. The wide region holds the
    /// attention output (later the FFN output) first, n_tokens × `plan.mid()`, then the normed
    /// copy of the hidden states where the program has one (n_tokens × `plan.normed()`), then
    /// the head group's Q|K|V (q of its query heads, k and v of its key/value heads, each as
    /// wide as a full group's) or the slab's up columns, then its gate columns.
    pub(super) fn place(&self, buf: Buf, pc: Pc) -> Result<Place> {
        let hp = self.model.hparams();
        let (n, e) = (self.n_tokens, hp.n_embd);
        let (r, dk, dv) = (hp.heads_per_kv(), hp.head_dim_k, hp.head_dim_v);
        let normed_at = mul(n, self.plan.mid())?;
        let after_mid = add(normed_at, mul(n, self.plan.normed())?)?;
        let (h0, heads) = self.group_heads(pc.iter);
        let g = self.layout.group;
        let q_full = mul(mul(g, r)?, dk)?;
        let qkv_stride = add(add(q_full, mul(g, dk)?)?, mul(g, dv)?)?;
        let (s0, s1) = self.slab_cols(pc.iter);
        let wide =
            |offset, stride, col, width, first| Place { in_wide: true, offset, stride, col, width, first };
        Ok(match buf {
            Buf::X => Place { in_wide: false, offset: 0, stride: e, col: 0, width: e, first: 0 },
            Buf::Y => wide(0, e, 0, e, 0),
            Buf::Normed => wide(normed_at, e, 0, e, 0),
            Buf::Ctx => {
                let ctx = mul(hp.n_head, dv)?;
                wide(0, ctx, 0, ctx, 0)
            }
            Buf::Q => wide(after_mid, qkv_stride, 0, mul(mul(heads, r)?, dk)?, mul(mul(h0, r)?, dk)?),
            Buf::K => wide(after_mid, qkv_stride, q_full, mul(heads, dk)?, mul(h0, dk)?),
            Buf::V => {
                let col = add(q_full, mul(g, dk)?)?;
                wide(after_mid, qkv_stride, col, mul(heads, dv)?, mul(h0, dv)?)
            }
            Buf::Up => wide(after_mid, self.layout.slab, 0, sub(s1, s0)?, s0),
            Buf::Gate => {
                let offset = add(after_mid, mul(n, self.layout.slab)?)?;
                wide(offset, self.layout.slab, 0, sub(s1, s0)?, s0)
            }
        })
    }

    /// The buffer `place` is in, from its offset on.
    pub(super) fn buffer(&mut self, place: Place) -> Result<&mut [f32]> {
        let buf = if place.in_wide { &mut *self.r.wide } else { &mut *self.r.x };
        buf.get_mut(place.offset..).ok_or(Error::InvalidState)
    }

    /// The first key/value head of group `group` and how many it has (none past the last
    /// group).
    pub(super) fn group_heads(&self, group: usize) -> (usize, usize) {
        let n_head_kv = self.model.hparams().n_head_kv;
        let h0 = group.saturating_mul(self.layout.group).min(n_head_kv);
        (h0, self.layout.group.min(n_head_kv.saturating_sub(h0)))
    }

    /// Columns `[s0, s1)` of the FFN hidden layer in slab `slab`.
    pub(super) fn slab_cols(&self, slab: usize) -> (usize, usize) {
        let ff = self.model.hparams().n_ff;
        let s0 = slab.saturating_mul(self.layout.slab).min(ff);
        (s0, s0.saturating_add(self.layout.slab).min(ff))
    }
}

/// Whether an operation is done text by text (its units counted per text).
fn per_text(kind: Kind) -> bool {
    matches!(kind, Kind::Attention | Kind::Pool | Kind::Normalize)
}
