//! Converting GGML tensor data to f32, block by block, following the block layouts of ggml's
//! `ggml-quants.c` (`dequantize_row_*`). Blocks are independent, so they are converted in
//! parallel. Each block is handed over as a fixed-size array, so every index inside a block is
//! checked by the type system, not by trust in the file.
//!
//! The arithmetic is ggml's: a scale times a small integer (minus a scaled minimum for the
//! "_K" types with minimums), in f32, in the same order, so results match ggml's bit for bit.

use half::{bf16, f16};
use rayon::prelude::*;

use super::types::{GgmlType, QK_K};

/// Blocks converted per parallel task (small blocks are cheap; keep task overhead low).
const BLOCKS_PER_TASK: usize = 1024;

/// `bytes` of type `ggml_type` holding `elements` values, as f32. The error message says how the
/// byte length disagrees with the element count.
pub(crate) fn dequantize(
    ggml_type: GgmlType,
    bytes: &[u8],
    elements: usize,
) -> Result<Vec<f32>, String> {
    let block = ggml_type.block_size();
    let block_bytes = ggml_type.block_bytes();
    if !elements.is_multiple_of(block) {
        return Err(format!(
            "{elements} elements is not a multiple of {ggml_type}'s block size {block}"
        ));
    }
    let expected = (elements / block).checked_mul(block_bytes);
    if expected != Some(bytes.len()) {
        return Err(format!(
            "{elements} elements of {ggml_type} take {} bytes, but the data has {}",
            expected.map_or_else(|| "too many".to_string(), |e| e.to_string()),
            bytes.len()
        ));
    }
    let mut out = vec![0f32; elements];
    match ggml_type {
        GgmlType::F32 => convert_scalars(bytes, &mut out, |b: [u8; 4]| f32::from_le_bytes(b)),
        GgmlType::F16 => {
            convert_scalars(bytes, &mut out, |b: [u8; 2]| f16::from_le_bytes(b).to_f32())
        }
        GgmlType::BF16 => convert_scalars(bytes, &mut out, |b: [u8; 2]| {
            bf16::from_le_bytes(b).to_f32()
        }),
        GgmlType::Q8_0 => convert_blocks::<34, 32>(bytes, &mut out, q8_0),
        GgmlType::Q4_0 => convert_blocks::<18, 32>(bytes, &mut out, q4_0),
        GgmlType::Q5_0 => convert_blocks::<22, 32>(bytes, &mut out, q5_0),
        GgmlType::Q4_1 => convert_blocks::<20, 32>(bytes, &mut out, q4_1),
        GgmlType::Q5_1 => convert_blocks::<24, 32>(bytes, &mut out, q5_1),
        GgmlType::IQ4_NL => convert_blocks::<18, 32>(bytes, &mut out, iq4_nl),
        GgmlType::Q2_K => convert_blocks::<84, QK_K>(bytes, &mut out, q2_k),
        GgmlType::Q3_K => convert_blocks::<110, QK_K>(bytes, &mut out, q3_k),
        GgmlType::IQ4_XS => convert_blocks::<136, QK_K>(bytes, &mut out, iq4_xs),
        GgmlType::Q4_K => convert_blocks::<144, QK_K>(bytes, &mut out, q4_k),
        GgmlType::Q5_K => convert_blocks::<176, QK_K>(bytes, &mut out, q5_k),
        GgmlType::Q6_K => convert_blocks::<210, QK_K>(bytes, &mut out, q6_k),
        other => return Err(format!("GGML type {other} cannot be converted to f32")),
    }
    Ok(out)
}

/// One value per `N` bytes (F32, F16, BF16).
fn convert_scalars<const N: usize>(bytes: &[u8], out: &mut [f32], convert: fn([u8; N]) -> f32) {
    out.par_chunks_mut(BLOCKS_PER_TASK * 16)
        .zip(bytes.par_chunks(BLOCKS_PER_TASK * 16 * N))
        .for_each(|(out, bytes)| {
            for (y, b) in out.iter_mut().zip(bytes.chunks_exact(N)) {
                let mut raw = [0u8; N];
                raw.copy_from_slice(b);
                *y = convert(raw);
            }
        });
}

/// Blocks of `B` bytes, each giving `V` values.
fn convert_blocks<const B: usize, const V: usize>(
    bytes: &[u8],
    out: &mut [f32],
    convert: fn(&[u8; B], &mut [f32; V]),
) {
    out.par_chunks_mut(BLOCKS_PER_TASK * V)
        .zip(bytes.par_chunks(BLOCKS_PER_TASK * B))
        .for_each(|(out, bytes)| {
            for (y, b) in out.chunks_exact_mut(V).zip(bytes.chunks_exact(B)) {
                // Both chunks have exactly the array lengths; the conversions cannot fail.
                if let (Ok(y), Ok(b)) = (<&mut [f32; V]>::try_from(y), <&[u8; B]>::try_from(b)) {
                    convert(b, y);
                }
            }
        });
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q8_0: f16 scale `d`, then 32 signed bytes; `y = d · q`.
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (j, y) in y.iter_mut().enumerate() {
        *y = d * f32::from(b[2 + j] as i8);
    }
}

/// Q4_0: f16 scale `d`, then 16 bytes of 4-bit values (low nibbles are values 0..16, high
/// nibbles 16..32), offset by 8; `y = d · (q - 8)`.
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = d * f32::from(i16::from(q & 0x0F) - 8);
        y[j + 16] = d * f32::from(i16::from(q >> 4) - 8);
    }
}

/// Q5_0: f16 scale `d`, a 32-bit word of fifth bits (bit j for value j), 16 bytes of low nibbles
/// laid out as in Q4_0; values offset by 16.
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let high_bits = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let q = b[6 + j];
        let high_lo = ((high_bits >> j) & 1) as u8;
        let high_hi = ((high_bits >> (j + 16)) & 1) as u8;
        let lo = (q & 0x0F) | (high_lo << 4);
        let hi = (q >> 4) | (high_hi << 4);
        y[j] = d * f32::from(i16::from(lo) - 16);
        y[j + 16] = d * f32::from(i16::from(hi) - 16);
    }
}

/// The 4-bit values of a 32-value block stored in 16 bytes: value `j` is the low nibble of byte
/// `j` for j < 16 and the high nibble of byte `j - 16` after (Q4_0's layout, shared by Q4_1,
/// Q5_1, IQ4_NL and IQ4_XS's sub-blocks).
fn nibbles(bytes: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for (j, b) in bytes.iter().take(16).enumerate() {
        q[j] = b & 0x0F;
        q[j + 16] = b >> 4;
    }
    q
}

/// Q4_1: f16 scale `d`, f16 minimum `m`, 16 bytes of 4-bit values; `y = d · q + m`.
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (y, q) in y.iter_mut().zip(nibbles(&b[4..20])) {
        *y = d * f32::from(q) + m;
    }
}

/// Q5_1: f16 scale `d`, f16 minimum `m`, a 32-bit word of fifth bits (bit j for value j), 16
/// bytes of low nibbles; `y = d · q + m`.
fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let high_bits = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, (y, low)) in y.iter_mut().zip(nibbles(&b[8..24])).enumerate() {
        let q = low | ((((high_bits >> j) & 1) as u8) << 4);
        *y = d * f32::from(q) + m;
    }
}

/// The 16 non-uniform levels of IQ4_NL and IQ4_XS (ggml's `kvalues_iq4nl`): a 4-bit code picks
/// one, and the block's scale multiplies it.
const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// IQ4_NL: f16 scale `d`, 16 bytes of 4-bit codes; `y = d · level(code)`.
fn iq4_nl(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (y, code) in y.iter_mut().zip(nibbles(&b[2..18])) {
        *y = d * f32::from(IQ4_LEVELS[usize::from(code)]);
    }
}

/// IQ4_XS: f16 `d`, a 16-bit word of the scales' high 2 bits (bits 2s, 2s+1 for sub-block s), 4
/// bytes of their low 4 bits (sub-block s in nibble s of the bytes, low nibble first), then 8
/// sub-blocks of 32 codes in IQ4_NL's layout; a sub-block's scale is `d · (6-bit scale - 32)`.
fn iq4_xs(b: &[u8; 136], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let scales_high = u16::from_le_bytes([b[2], b[3]]);
    for s in 0..QK_K / 32 {
        let low = (b[4 + s / 2] >> (4 * (s % 2))) & 0x0F;
        let high = ((scales_high >> (2 * s)) & 3) as u8;
        let dl = d * f32::from(i16::from(low | (high << 4)) - 32);
        let codes = nibbles(&b[8 + 16 * s..24 + 16 * s]);
        for (y, code) in y[32 * s..32 * s + 32].iter_mut().zip(codes) {
            *y = dl * f32::from(IQ4_LEVELS[usize::from(code)]);
        }
    }
}

/// Q2_K: 16 bytes of 4-bit scale and minimum pairs (one per 16 values, scale in the low
/// nibble), 64 bytes of 2-bit values, f16 `d`, f16 `dmin`; `y = d · scale · q - dmin · min`.
/// Each half of 128 values reads 32 bytes four times, two bits further each time.
fn q2_k(b: &[u8; 84], y: &mut [f32; QK_K]) {
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (i, y) in y.iter_mut().enumerate() {
        let (half, shift, l) = (i / 128, (i % 128) / 32, i % 32);
        let sc = b[i / 16];
        let dl = d * f32::from(sc & 0x0F);
        let ml = dmin * f32::from(sc >> 4);
        let q = (b[16 + 32 * half + l] >> (2 * shift)) & 3;
        *y = dl * f32::from(q) - ml;
    }
}

/// Q3_K: 32 bytes of high bits (bit k of byte l for value 32k + l; a set bit means no offset),
/// 64 bytes of 2-bit low parts laid out as in Q2_K, 12 bytes of 6-bit scales (one per 16 values,
/// low 4 bits in bytes 0..8, high 2 bits in bytes 8..12), f16 `d`;
/// `y = d · (scale - 32) · (low - (high bit ? 0 : 4))`.
fn q3_k(b: &[u8; 110], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 108);
    let scales = &b[96..108];
    let scale = |s: usize| {
        let low = (scales[s % 8] >> (4 * (s / 8))) & 0x0F;
        let high = (scales[8 + s % 4] >> (2 * (s / 4))) & 3;
        i16::from(low | (high << 4)) - 32
    };
    for (i, y) in y.iter_mut().enumerate() {
        let (half, shift, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = i16::from((b[32 + 32 * half + l] >> (2 * shift)) & 3);
        let high_set = (b[l] >> (i / 32)) & 1 == 1;
        let q = if high_set { low } else { low - 4 };
        let dl = d * f32::from(scale(i / 16));
        *y = dl * f32::from(q);
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K/Q5_K super-block, packed in 12
/// bytes (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

fn k_scales(b: &[u8]) -> [u8; 12] {
    let mut scales = [0u8; 12];
    scales.copy_from_slice(&b[4..16]);
    scales
}

/// Q4_K: f16 `d`, f16 `dmin`, 12 bytes of packed 6-bit scales and minimums for 8 sub-blocks of
/// 32, then 128 bytes of 4-bit values (each 32 bytes hold two sub-blocks: low then high nibbles);
/// `y = d · scale · q - dmin · min`.
fn q4_k(b: &[u8; 144], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = k_scales(b);
    for pair in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * pair, &scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, &scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        for l in 0..32 {
            let q = b[16 + 32 * pair + l];
            y[64 * pair + l] = d1 * f32::from(q & 0x0F) - min1;
            y[64 * pair + 32 + l] = d2 * f32::from(q >> 4) - min2;
        }
    }
}

/// Q5_K: as Q4_K, with 32 bytes of fifth bits after the scales (bit `s` of byte `l` belongs to
/// value `l` of sub-block `s`) before the 128 bytes of low nibbles.
fn q5_k(b: &[u8; 176], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = k_scales(b);
    let high = &b[16..48];
    let low = &b[48..176];
    for pair in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * pair, &scales);
        let (sc2, m2) = scale_min_k4(2 * pair + 1, &scales);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        for l in 0..32 {
            let q = low[32 * pair + l];
            let h1 = (high[l] >> (2 * pair)) & 1;
            let h2 = (high[l] >> (2 * pair + 1)) & 1;
            y[64 * pair + l] = d1 * f32::from((q & 0x0F) | (h1 << 4)) - min1;
            y[64 * pair + 32 + l] = d2 * f32::from((q >> 4) | (h2 << 4)) - min2;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of 2-bit high parts, 16 signed 8-bit scales (one per
/// 16 values), f16 `d`; values offset by 32; `y = d · scale · (q - 32)`. Each half of 128 values
/// uses 64 low-nibble bytes and 32 high-bit bytes.
fn q6_k(b: &[u8; 210], y: &mut [f32; QK_K]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let h = qh[l];
            let q1 = i16::from((ql[l] & 0x0F) | ((h & 3) << 4)) - 32;
            let q2 = i16::from((ql[l + 32] & 0x0F) | (((h >> 2) & 3) << 4)) - 32;
            let q3 = i16::from((ql[l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
            let q4 = i16::from((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
            let scale = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = scale(0) * f32::from(q1);
            y[l + 32] = scale(2) * f32::from(q2);
            y[l + 64] = scale(4) * f32::from(q3);
            y[l + 96] = scale(6) * f32::from(q4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_length_must_match_the_element_count() {
        let err = dequantize(GgmlType::Q8_0, &[0u8; 33], 32).unwrap_err();
        assert!(err.contains("take 34 bytes, but the data has 33"), "{err}");
        let err = dequantize(GgmlType::Q4_K, &[0u8; 144], 255).unwrap_err();
        assert!(
            err.contains("not a multiple of Q4_K's block size 256"),
            "{err}"
        );
    }

    /// A hand-built Q4_0 block against the formula written out per value.
    #[test]
    fn q4_0_block_by_hand() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for j in 0..16 {
            b[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        let y = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(y[j], 0.5 * (j as f32 - 8.0));
            assert_eq!(y[j + 16], 0.5 * (7.0 - j as f32));
        }
    }
}
