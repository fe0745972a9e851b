//! Carving a caller's byte arena into a job's typed regions, without `unsafe`.

use crate::engine::plan::{Plan, REGION_ALIGN};
use crate::error::{Error, Result};
use crate::quant::BlockQ8;

/// A job's working memory, carved from one arena by [`carve`].
#[derive(Debug)]
pub(crate) struct Regions<'a> {
    /// Hidden states: max_tokens × n_embd.
    pub x: &'a mut [f32],
    /// Q|K|V during attention; y then the FFN slab during the FFN: max_tokens × wide.
    pub wide: &'a mut [f32],
    /// Decoded weights, norm parameters, bias pieces.
    pub scratch: &'a mut [f32],
    /// Raw weight bytes read from the file.
    pub chunk: &'a mut [u8],
    /// Attention tiles: scores, accumulators, running max and sum.
    pub attn: &'a mut [f32],
    /// Token ids of all texts, one after another.
    pub ids: &'a mut [u32],
    /// The embeddings: max_texts × n_embd.
    pub out: &'a mut [f32],
    /// Per text: first token and token count.
    pub spans: &'a mut [u32],
    /// Where the tokenizer writes one text's ids.
    pub tok_out: &'a mut [u32],
    /// The tokenizer's work memory.
    pub tok_work: &'a mut [u8],
    /// Int8 blocks of a matrix product's input in fast mode (empty in a plan without them).
    pub q8: &'a mut [BlockQ8],
    /// Each extra part's output tile and decode scratch ([`Plan::with_threads`]).
    pub parts: &'a mut [f32],
}

/// Splits `arena` into the plan's regions, each aligned to [`REGION_ALIGN`].
///
/// An arena shorter than [`Plan::arena_bytes`] is [`Error::ArenaTooSmall`].
pub(crate) fn carve<'a>(plan: &Plan, arena: &'a mut [u8]) -> Result<Regions<'a>> {
    let given = arena.len();
    let too_small = Error::ArenaTooSmall { needed: plan.arena_bytes(), given };
    if given < plan.arena_bytes() {
        return Err(too_small);
    }
    let skip = arena.as_ptr().align_offset(REGION_ALIGN).min(REGION_ALIGN);
    let (_, mut rest) = arena.split_at_mut_checked(skip).ok_or(too_small)?;
    let mut take = |len: usize| -> Result<&'a mut [u8]> {
        let padded = len.checked_next_multiple_of(REGION_ALIGN).ok_or(too_small)?;
        let (region, tail) = core::mem::take(&mut rest).split_at_mut_checked(padded).ok_or(too_small)?;
        rest = tail;
        region.get_mut(..len).ok_or(too_small)
    };
    let floats = |b: &'a mut [u8]| bytemuck::try_cast_slice_mut::<u8, f32>(b).map_err(|_| too_small);
    let words = |b: &'a mut [u8]| bytemuck::try_cast_slice_mut::<u8, u32>(b).map_err(|_| too_small);
    let blocks = |b: &'a mut [u8]| bytemuck::try_cast_slice_mut::<u8, BlockQ8>(b).map_err(|_| too_small);
    let [x, wide, scratch, chunk, attn, ids, out, spans, tok_out, tok_work, q8, parts] = plan.regions();
    Ok(Regions {
        x: floats(take(x)?)?,
        wide: floats(take(wide)?)?,
        scratch: floats(take(scratch)?)?,
        chunk: take(chunk)?,
        attn: floats(take(attn)?)?,
        ids: words(take(ids)?)?,
        out: floats(take(out)?)?,
        spans: words(take(spans)?)?,
        tok_out: words(take(tok_out)?)?,
        tok_work: take(tok_work)?,
        q8: blocks(take(q8)?)?,
        parts: floats(take(parts)?)?,
    })
}
