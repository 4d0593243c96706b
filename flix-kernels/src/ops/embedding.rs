//! Token embedding: out[t] = table[ids[t]]. Backward scatters dOut rows into dTable, in token
//! order (deterministic).

use crate::batch::TokenIds;
use crate::error::{KernelError, Result};
use crate::{Device, Tensor};

fn check_ids(op: &'static str, ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(t) => Err(KernelError::Invalid {
            op,
            message: format!(
                "token {t} has id {} but the vocabulary has {vocab} rows",
                ids[t]
            ),
        }),
        None => Ok(()),
    }
}

/// Looks up the batch's token ids ([`TokenIds`], on the table's device) in `table` ([V, d]);
/// returns [T, d].
pub fn embedding_forward(table: &Tensor, token_ids: &TokenIds) -> Result<Tensor> {
    let _profile = crate::profile::scope("embedding_forward", table.device());
    const OP: &str = "embedding_forward";
    let [vocab, d] = two_d(OP, table)?;
    let ids = token_ids.host();
    check_ids(OP, ids, vocab)?;
    match table.device() {
        Device::Cpu => {
            let src = table.cpu_data(OP)?;
            let mut out = Vec::with_capacity(ids.len() * d);
            for &id in ids {
                out.extend_from_slice(&src[id as usize * d..(id as usize + 1) * d]);
            }
            Tensor::cpu(&[ids.len(), d], out)
        }
        Device::Cuda(b) => super::cuda::embedding::embedding_forward(b, table, token_ids),
    }
}

/// dTable[ids[t]] += dOut[t].
pub fn embedding_backward(dtable: &mut Tensor, token_ids: &TokenIds, dout: &Tensor) -> Result<()> {
    let _profile = crate::profile::scope("embedding_backward", dout.device());
    const OP: &str = "embedding_backward";
    let [vocab, d] = two_d(OP, dtable)?;
    let ids = token_ids.host();
    dout.expect_shape(OP, "dOut", &[ids.len(), d])?;
    check_ids(OP, ids, vocab)?;
    match dtable.device().clone() {
        Device::Cpu => {
            let g = dout.cpu_data(OP)?;
            let dst = dtable.cpu_data_mut(OP)?;
            for (t, &id) in ids.iter().enumerate() {
                let row = &mut dst[id as usize * d..(id as usize + 1) * d];
                for (a, b) in row.iter_mut().zip(&g[t * d..(t + 1) * d]) {
                    *a += b;
                }
            }
            Ok(())
        }
        Device::Cuda(b) => super::cuda::embedding::embedding_backward(&b, dtable, token_ids, dout),
    }
}

fn two_d(op: &'static str, t: &Tensor) -> Result<[usize; 2]> {
    match *t.shape() {
        [a, b] => Ok([a, b]),
        _ => Err(KernelError::Invalid {
            op,
            message: format!("table must be 2-D [vocab, dim], found {:?}", t.shape()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::oracle::{fd_check, pseudo_random};

    #[test]
    fn forward_gathers_rows_and_backward_matches_finite_differences() {
        let (v, d) = (5, 3);
        let ids = [4u32, 0, 4, 2];
        let table = pseudo_random(v * d, 1);
        let t = Tensor::cpu(&[v, d], table.clone()).unwrap();
        let token_ids = TokenIds::new(&Device::Cpu, &ids).unwrap();
        let out = embedding_forward(&t, &token_ids)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        for (i, &id) in ids.iter().enumerate() {
            for j in 0..d {
                assert_eq!(out[i * d + j], table[id as usize * d + j]);
            }
        }
        let dy = pseudo_random(ids.len() * d, 2);
        let mut dt = Tensor::cpu(&[v, d], vec![0.0; v * d]).unwrap();
        embedding_backward(
            &mut dt,
            &token_ids,
            &Tensor::cpu(&[ids.len(), d], dy.clone()).unwrap(),
        )
        .unwrap();
        let loss = |tab: &[f64]| -> f64 {
            let mut s = 0.0;
            for (i, &id) in ids.iter().enumerate() {
                for j in 0..d {
                    s += tab[id as usize * d + j] * dy[i * d + j] as f64;
                }
            }
            s
        };
        fd_check(&table, &dt.to_f32_vec().unwrap(), loss, 1e-4);
    }

    #[test]
    fn out_of_range_id_names_the_token() {
        let t = Tensor::cpu(&[3, 2], vec![0.0; 6]).unwrap();
        let ids = TokenIds::new(&Device::Cpu, &[0, 7]).unwrap();
        let err = embedding_forward(&t, &ids).unwrap_err().to_string();
        assert!(err.contains("token 1") && err.contains("id 7"), "{err}");
    }
}
