//! [`Plan`]: how much memory a job needs, decided before anything is allocated.
//!
//! A job's arena holds, per token, the hidden state `x` (n_embd floats) and a "wide" region.
//! During attention the wide region holds the attention output (n_embd) and Q|K|V of one group
//! of heads; during the FFN it holds the FFN output `y` (n_embd) and one slab of the FFN's hidden
//! layer (its up and gate columns). Heads are processed a group at a time and the hidden layer a
//! slab of columns at a time, so memory grows with neither the head count nor the FFN width;
//! every weight row is still read once per forward pass. Besides: a weight chunk buffer, decoded-
//! weight scratch, attention tiles, token ids, the tokenizer's memory and the outputs. A plan
//! fixes every size; [`Plan::arena_bytes`] is exact.

use crate::engine::program::Program;
use crate::engine::Mode as NumericMode;
use crate::error::{Error, Result};
use crate::model::{LayerSlot, Model, TensorRef};
use crate::quant::int8::matmul_q8_max_k;
use crate::quant::{matmul_q8_scratch_len, matmul_scratch_len, BlockQ8};
use crate::tokenizer::{Mode, TextVocab, MIN_MODEL_WINDOW, MIN_WINDOW_CHARS};

/// The most tokens one job can plan for (token positions are kept as u32).
pub const MAX_TOKENS: usize = 1 << 24;

/// Alignment of every arena region (a cache line).
pub(crate) const REGION_ALIGN: usize = 64;

/// The most parts one step's matrix product is split into ([`Plan::with_threads`]).
pub const MAX_PARTS: usize = 16;

/// Floats of output tile per extra part: the sums of its rows for every token of the product
/// (64 KiB; a part takes as many rows as fit it, see `job::parts`).
pub(crate) const PART_TILE: usize = 16 * 1024;

/// What a job must be able to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most tokens in one job, over all its texts ([CLS] and [SEP] included).
    pub max_tokens: usize,
    /// Most texts in one job (a batch shares each streamed weight chunk).
    pub max_texts: usize,
}

impl Limits {
    /// One text of up to `max_tokens` tokens.
    pub const fn tokens(max_tokens: usize) -> Self {
        Limits { max_tokens, max_texts: 1 }
    }
}

/// The three plans, from fastest to smallest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlanKind {
    /// [`Plan::new`].
    #[default]
    Fast,
    /// [`Plan::lean`].
    Lean,
    /// [`Plan::smallest`].
    Smallest,
}

/// Every size of a job's arena. Build with [`Plan::new`] (fast), [`Plan::smallest`] or
/// [`Plan::fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub(crate) limits: Limits,
    pub(crate) n_embd: usize,
    /// Floats per token of the wide region (at `limits.max_tokens`).
    pub(crate) wide: usize,
    /// Heads per attention group at `limits.max_tokens` (a job of fewer tokens may use more: see
    /// [`Plan::layout_for`]).
    pub(crate) group: usize,
    /// Columns of the FFN hidden layer per slab at `limits.max_tokens` (likewise).
    pub(crate) slab: usize,
    /// Queries and keys per attention tile.
    pub(crate) q_tile: usize,
    pub(crate) k_tile: usize,
    pub(crate) head_dim: usize,
    /// Bytes of the weight chunk buffer.
    pub(crate) chunk_bytes: usize,
    /// Floats of decoded-weight scratch.
    pub(crate) scratch: usize,
    /// How the tokenizer looks pieces up, and its window of text (chars for WordPiece, bytes
    /// for SentencePiece and BPE).
    pub(crate) mode: Mode,
    pub(crate) window: usize,
    /// The numeric mode the plan has room for ([`Plan::with_mode`]), and the blocks of its int8
    /// activation region (0 unless [`NumericMode::Fast`]).
    pub(crate) numeric: NumericMode,
    pub(crate) q8_blocks: usize,
    /// Parts a matrix product may be split into, one per thread ([`Plan::with_threads`]); the
    /// first works in place, each other has an output tile and decode scratch of its own.
    pub(crate) parts: usize,
    shape: Shape,
    index_bytes: usize,
    arena_bytes: usize,
}

/// How one job uses the wide region, chosen when its token count is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Heads per attention group.
    pub group: usize,
    /// Columns of the FFN hidden layer per slab.
    pub slab: usize,
}

/// The choices that distinguish a fast plan from a small one.
#[derive(Clone, Copy)]
struct Choices {
    mode: Mode,
    window: usize,
    /// Bytes the wide region may take beyond the minimum for `group` and `slab`.
    wide_allowance: usize,
    group: usize,
    slab: usize,
    q_tile: usize,
    k_tile: usize,
    chunk_bytes: usize,
    scratch: usize,
}

impl Plan {
    /// The fast plan: the tokenizer looks pieces up in a vocab index (built once per model in
    /// separate memory, [`Plan::index_bytes`]), 64 KiB weight chunks and decode tiles of about
    /// 192 KiB (a few hundred KiB over the minimum), and per token about 3·n_embd floats — a
    /// third of the heads per attention group and FFN slabs as wide as that group's room — or,
    /// while the whole region stays under 2 MiB, room for all heads and the whole FFN at once.
    /// A job of fewer than `max_tokens` tokens uses the room it leaves for more heads and wider
    /// slabs (fewer, larger reads).
    pub fn new(model: &Model<'_>, limits: Limits) -> Result<Self> {
        Plan::third_of_the_heads(model, limits, Mode::Index, 2 << 20, 256)
    }

    /// The lean plan: the fast plan's layout without the vocab index (the tokenizer streams the
    /// vocab once per window of up to 4096 chars, a few milliseconds per text), with smaller
    /// attention tiles and a 1 MiB allowance for the wide region: about 500 KiB less, nearly
    /// the same speed on long texts.
    pub fn lean(model: &Model<'_>, limits: Limits) -> Result<Self> {
        Plan::third_of_the_heads(model, limits, Mode::Scan, 1 << 20, 128)
    }

    /// The layout shared by the fast and lean plans: a third of the heads per attention group,
    /// the slab that fits beside it, 64 KiB chunks, the kernels' preferred decode tile.
    fn third_of_the_heads(
        model: &Model<'_>,
        limits: Limits,
        mode: Mode,
        wide_allowance: usize,
        k_tile: usize,
    ) -> Result<Self> {
        let shape = Shape::of(model)?;
        let window = shape.window(limits, mode);
        let group = shape.n_head_kv.div_ceil(3);
        let slab = shape.slab_within(shape.qkv_width(group));
        let (_, preferred) = matmul_scratch_len(shape.n_embd.max(slab).max(shape.dense));
        let choices = Choices {
            mode,
            window,
            wide_allowance,
            group,
            slab,
            q_tile: 32,
            k_tile,
            chunk_bytes: (64 * 1024).max(shape.max_span(slab)),
            scratch: preferred.max(shape.min_scratch(slab)),
        };
        Plan::build(&shape, limits, choices)
    }

    /// The smallest plan that works: no vocab index (the tokenizer streams the vocab from the
    /// file), room for one head per attention group and the narrowest FFN slab, one weight row
    /// per read, one row of decode scratch, one query per attention tile. Slower (more, smaller
    /// reads), same results.
    pub fn smallest(model: &Model<'_>, limits: Limits) -> Result<Self> {
        let shape = Shape::of(model)?;
        let slab = shape.slab_within(shape.qkv_width(1));
        let choices = Choices {
            mode: Mode::Scan,
            window: shape.vocab.min_window(),
            wide_allowance: 0,
            group: 1,
            slab,
            q_tile: 1,
            k_tile: 16,
            chunk_bytes: shape.max_span(slab),
            scratch: shape.min_scratch(slab),
        };
        Plan::build(&shape, limits, choices)
    }

    /// The plan of the given kind.
    pub fn of_kind(model: &Model<'_>, limits: Limits, kind: PlanKind) -> Result<Self> {
        match kind {
            PlanKind::Fast => Plan::new(model, limits),
            PlanKind::Lean => Plan::lean(model, limits),
            PlanKind::Smallest => Plan::smallest(model, limits),
        }
    }

    /// The fastest of [`Plan::new`], [`Plan::lean`] and [`Plan::smallest`] whose arena and
    /// vocab index together fit `memory` bytes; memory too small for all three is
    /// [`Error::ArenaTooSmall`] with the smallest plan's size.
    pub fn fit(model: &Model<'_>, limits: Limits, memory: usize) -> Result<Self> {
        Plan::fit_mode(model, limits, memory, NumericMode::Exact)
    }

    /// Bytes of the arena and the vocab index together.
    pub fn memory_bytes(&self) -> usize {
        self.arena_bytes.saturating_add(self.index_bytes)
    }

    /// Exact bytes of arena a job with this plan needs (alignment slack included: any arena of
    /// this length works, wherever it starts).
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// The limits planned for.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How the tokenizer looks pieces up: [`Mode::Index`] needs a vocab index built once per
    /// model in [`Plan::index_bytes`] of memory that outlives the jobs; [`Mode::Scan`] needs
    /// none.
    pub fn tokenizer_mode(&self) -> Mode {
        self.mode
    }

    /// Bytes of the vocab index ([`crate::tokenizer::IndexBuilder`]) the plan's tokenizer mode
    /// needs, outside the arena (0 for [`Mode::Scan`]).
    pub fn index_bytes(&self) -> usize {
        self.index_bytes
    }

    fn build(shape: &Shape, limits: Limits, c: Choices) -> Result<Self> {
        let too_big = Error::ArenaTooSmall { needed: usize::MAX, given: 0 };
        if limits.max_tokens < 2
            || limits.max_texts == 0
            || limits.max_tokens > MAX_TOKENS
            || limits.max_texts > limits.max_tokens
        {
            return Err(Error::Input(crate::error::InputError::BadLimits));
        }
        let n = limits.max_tokens;
        let e = shape.n_embd;
        let gates = if shape.gated { 2 } else { 1 };
        let attention = shape.qkv_width(c.group);
        let ffn = c.slab.checked_mul(gates).ok_or(too_big)?;
        let before = shape.mid.checked_add(shape.normed).ok_or(too_big)?;
        // The dense hidden vectors (one per text, after the layers) fit there too.
        let wide = before.checked_add(attention.max(ffn)).ok_or(too_big)?.max(shape.dense);
        // While the whole wide region stays within the allowance, give every token room for
        // all heads at once and the whole FFN width: fewer, larger weight reads.
        let widest =
            shape.qkv_width(shape.n_head_kv).max(shape.n_ff.saturating_mul(gates)).saturating_add(before);
        let allowed =
            c.wide_allowance.checked_div(n.saturating_mul(core::mem::size_of::<f32>())).unwrap_or(0);
        let wide = wide.max(widest.min(allowed));
        let q_tile = c.q_tile.min(n);
        let k_tile = c.k_tile.min(n);
        let mut plan = Plan {
            limits,
            n_embd: e,
            wide,
            group: c.group.clamp(1, shape.n_head_kv),
            slab: c.slab,
            q_tile,
            k_tile,
            head_dim: shape.head_dim_k.max(shape.head_dim_v),
            chunk_bytes: c.chunk_bytes,
            scratch: c.scratch,
            // Every tokenizer has a scan mode (BPE too: it streams the merges as well).
            mode: c.mode,
            window: c.window,
            shape: *shape,
            index_bytes: match c.mode {
                Mode::Scan => 0,
                Mode::Index => shape.index_bytes,
            },
            numeric: NumericMode::Exact,
            q8_blocks: 0,
            parts: 1,
            arena_bytes: 0,
        };
        plan.arena_bytes = plan.total_bytes().ok_or(too_big)?;
        Ok(plan)
    }

    /// The arena bytes of the regions with their alignment (`None` on overflow).
    fn total_bytes(&self) -> Option<usize> {
        self.regions()
            .iter()
            .try_fold(REGION_ALIGN, |acc, &r| acc.checked_add(r.checked_next_multiple_of(REGION_ALIGN)?))
    }

    /// This plan with room for jobs in `mode` as well. For [`NumericMode::Fast`]: a region for
    /// the int8 blocks of every token's matrix-product input and their residual (twice
    /// `max_tokens · k / 32` blocks of 40 bytes, for the widest input `k` of the plan's layout;
    /// 3% to 19% more arena on the fixture models) and decode scratch for one int8 weight panel of
    /// such rows (6 floats per element at most). [`NumericMode::Exact`] needs nothing more:
    /// the plan as it is. A plan with the region lays exact jobs out as fast ones (FFN slabs
    /// no wider than the region holds).
    pub fn with_mode(self, mode: NumericMode) -> Result<Plan> {
        if mode == NumericMode::Exact || self.numeric == NumericMode::Fast {
            return Ok(self);
        }
        let too_big = Error::ArenaTooSmall { needed: usize::MAX, given: 0 };
        let k = self.shape.mid.max(self.slab);
        // Twice: the blocks and their residual (see `job::matmul`).
        let blocks =
            (k / 32).checked_mul(self.limits.max_tokens).and_then(|b| b.checked_mul(2)).ok_or(too_big)?;
        let scratch = self.scratch.max(matmul_q8_scratch_len(k));
        let mut plan = Plan { numeric: NumericMode::Fast, q8_blocks: blocks, scratch, ..self };
        plan.arena_bytes = plan.total_bytes().ok_or(too_big)?;
        Ok(plan)
    }

    /// This plan with room for splitting each matrix product into up to `parts` parts that run
    /// at the same time ([`crate::engine::Job::step_parallel`]; clamped to 1..=[`MAX_PARTS`]):
    /// per part beyond the first, an output tile of 64 KiB and decode scratch as large as the
    /// plan's. `with_threads(1)` is the plan as it is. Any split gives the same bits.
    pub fn with_threads(self, parts: usize) -> Result<Plan> {
        let too_big = Error::ArenaTooSmall { needed: usize::MAX, given: 0 };
        let mut plan = Plan { parts: parts.clamp(1, MAX_PARTS), ..self };
        plan.arena_bytes = plan.total_bytes().ok_or(too_big)?;
        Ok(plan)
    }

    /// The most parts a matrix product of a job with this plan is split into.
    pub fn threads(&self) -> usize {
        self.parts
    }

    /// Floats of each extra part's space: its output tile, then its decode scratch.
    pub(crate) fn part_floats(&self) -> usize {
        PART_TILE.saturating_add(self.scratch)
    }

    /// [`Plan::fit`] for jobs in `mode`: the fastest plan whose arena (with what `mode` needs,
    /// [`Plan::with_mode`]) and vocab index fit `memory` bytes.
    pub fn fit_mode(model: &Model<'_>, limits: Limits, memory: usize, mode: NumericMode) -> Result<Self> {
        let mut needed = 0;
        for kind in [PlanKind::Fast, PlanKind::Lean, PlanKind::Smallest] {
            let plan = Plan::of_kind(model, limits, kind)?.with_mode(mode)?;
            needed = plan.memory_bytes();
            if needed <= memory {
                return Ok(plan);
            }
        }
        Err(Error::ArenaTooSmall { needed, given: memory })
    }

    /// Fails with [`Error::PlanMismatch`] unless this plan was made for `model` (or one of the
    /// very same shape and tensor types). O(layers).
    pub(crate) fn check_model(&self, model: &Model<'_>) -> Result<()> {
        if Shape::of(model)? == self.shape {
            Ok(())
        } else {
            Err(Error::PlanMismatch)
        }
    }

    /// The layout of a job of `n_tokens` tokens: as many heads per attention group and as wide
    /// an FFN slab as the wide region holds for that many tokens (never less than the plan's),
    /// within what the decode scratch and the weight chunk buffer take.
    pub(crate) fn layout_for(&self, n_tokens: usize) -> Layout {
        let sh = &self.shape;
        let total = self.limits.max_tokens.saturating_mul(self.wide);
        let room =
            total.checked_div(n_tokens.max(1)).unwrap_or(0).saturating_sub(sh.mid).saturating_sub(sh.normed);
        let per_group = sh.qkv_width(1).max(1);
        let group = room.checked_div(per_group).unwrap_or(0).clamp(self.group, sh.n_head_kv.max(self.group));
        let (bb, be) = sh.down_density;
        let by_chunk = self.chunk_bytes.checked_div(bb.max(1)).unwrap_or(0).saturating_mul(be);
        let slab = sh.slab_within(room).min(self.scratch).min(by_chunk).min(self.q8_cols(n_tokens));
        let block = sh.down_block.max(1);
        let slab = slab.checked_div(block).unwrap_or(0).saturating_mul(block).max(self.slab);
        Layout { group, slab }
    }

    /// The widest matrix-product input whose int8 blocks (and residual) for `n_tokens` tokens
    /// fit the int8 region and whose weight panel fits the scratch (no limit in a plan without the region).
    pub(crate) fn q8_cols(&self, n_tokens: usize) -> usize {
        if self.q8_blocks == 0 {
            return usize::MAX;
        }
        let per_token = (self.q8_blocks / 2).checked_div(n_tokens.max(1)).unwrap_or(0).saturating_mul(32);
        per_token.min(matmul_q8_max_k(self.scratch))
    }

    /// Floats per token of the wide region before the head group's Q|K|V or the FFN slab:
    /// the attention output, later the FFN output (see `job::place`).
    pub(crate) fn mid(&self) -> usize {
        self.shape.mid
    }

    /// Floats per token of the wide region after the attention output for the normed copy of
    /// the hidden states (n_embd for the pre-norm architectures, else 0; see `job::place`).
    pub(crate) fn normed(&self) -> usize {
        self.shape.normed
    }

    /// Byte sizes of the arena's regions, in carving order (see `engine::arena`).
    pub(crate) fn regions(&self) -> [usize; 12] {
        let n = self.limits.max_tokens;
        let f = core::mem::size_of::<f32>();
        let floats = |count: usize| count.saturating_mul(f);
        [
            floats(n.saturating_mul(self.n_embd)),                          // x
            floats(n.saturating_mul(self.wide)),                            // wide
            floats(self.scratch),                                           // scratch
            self.chunk_bytes,                                               // weight chunk
            floats(self.attention_floats()),                                // attention tiles
            n.saturating_mul(core::mem::size_of::<u32>()),                  // token ids
            floats(self.limits.max_texts.saturating_mul(self.n_embd)),      // outputs
            self.limits.max_texts.saturating_mul(8),                        // text spans: two u32 each
            n.saturating_mul(core::mem::size_of::<u32>()),                  // tokenizer output
            self.shape.vocab.work_bytes(self.mode, self.window),            // tokenizer work
            self.q8_blocks.saturating_mul(core::mem::size_of::<BlockQ8>()), // int8 activations
            floats(self.parts.saturating_sub(1).saturating_mul(self.part_floats())), // extra parts
        ]
    }

    /// Scores (q_tile × k_tile), a key block's values transposed (head_dim × k_tile), and the
    /// running max and sum of every query of a text (2 × max_tokens).
    pub(crate) fn attention_floats(&self) -> usize {
        let scores = self.q_tile.saturating_mul(self.k_tile);
        let values = self.k_tile.saturating_mul(self.head_dim);
        scores.saturating_add(values).saturating_add(self.limits.max_tokens.saturating_mul(2))
    }
}

/// What of a model's shape the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    n_embd: usize,
    n_ff: usize,
    n_head_kv: usize,
    /// Query heads per key/value head.
    heads_per_kv: usize,
    head_dim_k: usize,
    head_dim_v: usize,
    /// Floats per token of the attention output, later of the FFN output.
    mid: usize,
    /// Floats per token of the normed copy of the hidden states (0 when the program has none).
    normed: usize,
    /// Floats of one text's dense hidden vector (0 without dense projections).
    dense: usize,
    gated: bool,
    /// Block size of the FFN down projection (slabs are whole blocks of its rows).
    down_block: usize,
    /// Largest bytes of one full row among the matrices read whole (n_embd-wide rows).
    max_row: usize,
    /// The down projections' largest bytes per element, as (block bytes, block elements).
    down_density: (usize, usize),
    /// The vocab, for the tokenizer's memory.
    vocab: TextVocab,
    /// Bytes of the model's vocab index.
    index_bytes: usize,
}

impl Shape {
    fn of(model: &Model<'_>) -> Result<Self> {
        let meta = model.meta();
        let hp = &meta.hparams;
        let mut max_row = 0usize;
        let mut down_block = 1usize;
        let mut down_density = (0usize, 1usize);
        let mut see = |t: &TensorRef| max_row = max_row.max(t.row_bytes());
        // Everything read whole into the chunk buffer: embedding rows, norm vectors, and the
        // weight rows but the down projection's (read a slab's span at a time; biases are read
        // in pieces).
        see(&meta.token_embd);
        let norms = meta.embd_norm.map(|n| [n.weight, n.bias]);
        let optional = [meta.position_embd, meta.token_types, meta.output_norm];
        for t in [norms, meta.dense].iter().flatten().flatten().chain(optional.iter().flatten()) {
            see(t);
        }
        for i in 0..hp.n_layer {
            let layer = model.layer(i)?;
            for slot in LayerSlot::ALL {
                match layer.get(slot) {
                    Some(d) if slot == LayerSlot::FfnDown => {
                        let (be, bb) = (d.ty.block_elems() as usize, d.ty.block_bytes() as usize);
                        down_block = lcm(down_block, be);
                        // Compare bytes per element as fractions bb/be.
                        let (pb, pe) = down_density;
                        if bb.saturating_mul(pe) > pb.saturating_mul(be) {
                            down_density = (bb, be);
                        }
                    }
                    Some(t) if !slot.is_bias() => see(&t),
                    _ => {}
                }
            }
        }
        Ok(Shape {
            n_embd: hp.n_embd,
            n_ff: hp.n_ff,
            n_head_kv: hp.n_head_kv,
            heads_per_kv: hp.heads_per_kv(),
            head_dim_k: hp.head_dim_k,
            head_dim_v: hp.head_dim_v,
            mid: hp.n_embd.max(hp.n_head.saturating_mul(hp.head_dim_v)),
            normed: if Program::of(meta.arch).normed() { hp.n_embd } else { 0 },
            dense: meta.dense.map_or(0, |[d2, _]| d2.rows as usize),
            gated: Program::of(meta.arch).gated(),
            down_block,
            max_row,
            down_density,
            vocab: meta.text_vocab(),
            index_bytes: meta.text_vocab().index_bytes()?,
        })
    }

    /// The tokenizer's window for `limits` in `mode`. WordPiece needs only the minimum with an
    /// index; in scan mode each window costs a pass over the vocab, and about 8 chars per token
    /// covers most texts in one. SentencePiece and BPE cut text only where no piece can span
    /// (spaces, word ends), so a window must hold the longest uncut fragment (BPE: the longest
    /// word): about 8 bytes per token up to 16 KiB with an index (≈ 1.4 MB of work memory),
    /// 4 KiB when scanning (BPE: ≈ 420 KB; each batch of text streams the tokens and the
    /// merges twice each).
    fn window(&self, limits: Limits, mode: Mode) -> usize {
        let per_token = limits.max_tokens.saturating_mul(8);
        match (self.vocab, mode) {
            (TextVocab::WordPiece(_), Mode::Index) => MIN_WINDOW_CHARS,
            (TextVocab::WordPiece(_), Mode::Scan) => per_token.clamp(MIN_WINDOW_CHARS, 4096),
            (TextVocab::Model(_), Mode::Index) => per_token.clamp(MIN_MODEL_WINDOW, 16 << 10),
            (TextVocab::Model(_), Mode::Scan) => per_token.clamp(MIN_MODEL_WINDOW, 4096),
        }
    }

    /// The least decode scratch: two n_embd vectors (a norm's parameters), a query/key head's
    /// norm weight, a slab's down-projection row, a dense projection's row.
    fn min_scratch(&self, slab: usize) -> usize {
        2usize.saturating_mul(self.n_embd).max(self.head_dim_k).max(slab).max(self.dense)
    }

    /// Floats per token of Q|K|V for a group of `group` key/value heads and their query heads.
    fn qkv_width(&self, group: usize) -> usize {
        let per_kv_head = self.heads_per_kv.saturating_add(1).saturating_mul(self.head_dim_k);
        group.clamp(1, self.n_head_kv).saturating_mul(per_kv_head.saturating_add(self.head_dim_v))
    }

    /// The widest FFN slab whose up (and gate) columns fit `room` floats per token: whole
    /// down-projection blocks, at least one, at most the FFN width.
    fn slab_within(&self, room: usize) -> usize {
        let per_gate = if self.gated { room / 2 } else { room };
        let b = self.down_block.max(1);
        let s = per_gate.min(self.n_ff).checked_div(b).unwrap_or(0).saturating_mul(b);
        s.max(b).min(self.n_ff.max(b))
    }

    /// The largest single read: a full n_embd-wide row, or a slab's span of a down row.
    fn max_span(&self, slab: usize) -> usize {
        let (bb, be) = self.down_density;
        let span = slab.checked_div(be.max(1)).unwrap_or(0).saturating_mul(bb);
        self.max_row.max(span).max(1)
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a.checked_rem(b).unwrap_or(0))
    }
}

fn lcm(a: usize, b: usize) -> usize {
    a.checked_div(gcd(a, b)).unwrap_or(1).saturating_mul(b)
}
