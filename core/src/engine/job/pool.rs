//! From hidden states to embeddings: pooling each text's tokens, then normalising.

use super::*;
use crate::model::Pooling;
use checked::mul;

impl<'a> Job<'a> {
    /// The units of pooling text `text`: its tokens for mean pooling, one for the others.
    pub(super) fn pool_units(&self, text: usize) -> Result<usize> {
        Ok(match self.model.hparams().pooling {
            Pooling::Mean => self.span(text)?.1,
            Pooling::Cls => 1,
        })
    }

    /// Pools tokens `tokens` (counted within the text) of text `text` into its output slot.
    /// Mean pooling sums the tokens into scratch with compensation (Neumaier), so the sum is
    /// as exact as in f64, and writes the mean at the text's last token; CLS pooling copies the
    /// first token.
    pub(super) fn pool(&mut self, text: usize, tokens: core::ops::Range<usize>) -> Result<()> {
        let e = self.plan.n_embd;
        let (start, len) = self.span(text)?;
        let out = self.r.out.get_mut(nth_row(text, e)?).ok_or(Error::InvalidState)?;
        match self.model.hparams().pooling {
            Pooling::Cls => {
                out.copy_from_slice(self.r.x.get(nth_row(start, e)?).ok_or(Error::InvalidState)?);
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
