//! From hidden states to embeddings: pooling each text's tokens, the dense projections of the
//! pooled vectors, then normalising.

use super::matmul::{multiply, read_rows, Activations};
use super::*;
use crate::engine::program::Pooled;
use crate::model::Pooling;
use checked::mul;

impl<'a> Job<'a> {
    /// The units of pooling text `text`: its tokens for mean pooling, one for the others.
    pub(super) fn pool_units(&self, text: usize) -> Result<usize> {
        Ok(match self.model.hparams().pooling {
            Pooling::Mean => self.span(text)?.1,
            Pooling::Cls | Pooling::Last => 1,
        })
    }

    /// Pools tokens `tokens` (counted within the text) of text `text` into its output slot.
    /// Mean pooling sums the tokens into scratch with compensation (Neumaier), so the sum is
    /// as exact as in f64, and writes the mean at the text's last token; CLS pooling copies the
    /// first token, last-token pooling the last.
    pub(super) fn pool(&mut self, text: usize, tokens: core::ops::Range<usize>) -> Result<()> {
        let e = self.plan.n_embd;
        let (start, len) = self.span(text)?;
        let out = self.r.out.get_mut(nth_row(text, e)?).ok_or(Error::InvalidState)?;
        let pooling = self.model.hparams().pooling;
        match pooling {
            Pooling::Cls | Pooling::Last => {
                let t = if pooling == Pooling::Cls { start } else { add(start, sub(len, 1)?)? };
                out.copy_from_slice(self.r.x.get(nth_row(t, e)?).ok_or(Error::InvalidState)?);
            }
            Pooling::Mean => {
                let (sum, comp) = self.r.scratch.split_at_mut_checked(e).ok_or(Error::InvalidState)?;
                let comp = comp.get_mut(..e).ok_or(Error::InvalidState)?;
                if tokens.start == 0 {
                    sum.fill(0.0);
                    comp.fill(0.0);
                }
                let first = add(start, tokens.start)?;
                let rows = self.r.x.get(mul(first, e)?..mul(add(first, tokens.len())?, e)?);
                for token_x in rows.ok_or(Error::InvalidState)?.chunks_exact(e) {
                    for ((s, c), &v) in sum.iter_mut().zip(comp.iter_mut()).zip(token_x) {
                        let t = *s + v;
                        *c += if s.abs() >= v.abs() { (*s - t) + v } else { (v - t) + *s };
                        *s = t;
                    }
                }
                if tokens.end >= len {
                    let inv = 1.0 / len as f64;
                    for ((o, &s), &c) in out.iter_mut().zip(sum.iter()).zip(comp.iter()) {
                        *o = ((f64::from(s) + f64::from(c)) * inv) as f32;
                    }
                }
            }
        }
        Ok(())
    }

    /// Rows `rows` of `w` applied to every text's pooled vector: `into` [`Pooled::Hidden`] reads
    /// the embeddings (n_embd each) and writes the dense hidden vectors (`w.rows` each, from the
    /// start of the wide region), [`Pooled::Embedding`] reads those (`w.cols` each) and writes the
    /// embeddings. The rows' outputs are set, not accumulated, and checked finite.
    pub(super) fn dense<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        w: &TensorRef,
        into: Pooled,
        rows: core::ops::Range<usize>,
    ) -> Result<()> {
        let (n, e, k) = (self.n_texts, self.plan.n_embd, w.cols as usize);
        let non_finite = self.non_finite();
        let raw = read_rows(io, self.r.chunk, w, rows.start, rows.len(), (0, k))?;
        let (src, src_stride, dst, dst_stride) = match into {
            Pooled::Hidden => (&*self.r.out, e, &mut *self.r.wide, w.rows as usize),
            Pooled::Embedding => (&*self.r.wide, k, &mut *self.r.out, e),
        };
        let out = dst.get_mut(rows.start..).ok_or(Error::InvalidState)?;
        for text in 0..n {
            out.get_mut(span(mul(text, dst_stride)?, rows.len())?).ok_or(Error::InvalidState)?.fill(0.0);
        }
        multiply(
            &self.kernels,
            w.ty,
            raw,
            rows.len(),
            k,
            Activations::F32(src, src_stride),
            n,
            out,
            dst_stride,
            self.r.scratch,
        )?;
        for text in 0..n {
            let sums = out.get(span(mul(text, dst_stride)?, rows.len())?).ok_or(Error::InvalidState)?;
            ensure_finite(sums, non_finite)?;
        }
        Ok(())
    }

    /// Scales text `text`'s embedding to unit L2 norm (when the options ask for it) and checks
    /// it is finite.
    pub(super) fn normalize(&mut self, text: usize) -> Result<()> {
        let e = self.plan.n_embd;
        let non_finite = self.non_finite();
        let out = self.r.out.get_mut(nth_row(text, e)?).ok_or(Error::InvalidState)?;
        if self.options.normalize {
            ops::l2_normalize(out);
        }
        ensure_finite(out, non_finite)
    }
}
