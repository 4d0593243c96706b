//! GGML tensor types: their numbers in a GGUF file, names, and block layouts (how many values a
//! block holds and how many bytes it takes), as ggml defines them.

/// A GGML tensor type whose number is known. Known types can be sized (so a file that holds them
/// opens); only some can be dequantized (see [`GgmlType::can_dequantize`]).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Values per super-block of the k-quants.
pub(crate) const QK_K: usize = 256;

/// Every known type: (number in the file, type, values per block, bytes per block).
const TABLE: &[(u32, GgmlType, usize, usize)] = {
    use GgmlType::*;
    &[
        (0, F32, 1, 4),
        (1, F16, 1, 2),
        (2, Q4_0, 32, 2 + 16),
        (3, Q4_1, 32, 2 + 2 + 16),
        (6, Q5_0, 32, 2 + 4 + 16),
        (7, Q5_1, 32, 2 + 2 + 4 + 16),
        (8, Q8_0, 32, 2 + 32),
        (9, Q8_1, 32, 4 + 4 + 32),
        (10, Q2_K, QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
        (11, Q3_K, QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
        (12, Q4_K, QK_K, 2 + 2 + QK_K / 2 + 12),
        (13, Q5_K, QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
        (14, Q6_K, QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
        (15, Q8_K, QK_K, 4 + QK_K + QK_K / 8),
        (16, IQ2_XXS, QK_K, 2 + QK_K / 4),
        (17, IQ2_XS, QK_K, 2 + QK_K / 4 + QK_K / 32),
        (18, IQ3_XXS, QK_K, 2 + QK_K / 4 + QK_K / 8),
        (19, IQ1_S, QK_K, 2 + QK_K / 8 + QK_K / 16),
        (20, IQ4_NL, 32, 2 + 16),
        (21, IQ3_S, QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4),
        (22, IQ2_S, QK_K, 2 + QK_K / 4 + QK_K / 16),
        (23, IQ4_XS, QK_K, 2 + 2 + QK_K / 2 + QK_K / 64),
        (24, I8, 1, 1),
        (25, I16, 1, 2),
        (26, I32, 1, 4),
        (27, I64, 1, 8),
        (28, F64, 1, 8),
        (29, IQ1_M, QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
        (30, BF16, 1, 2),
        (34, TQ1_0, QK_K, 2 + 4 * 13),
        (35, TQ2_0, QK_K, 2 + 64),
        (39, MXFP4, 32, 1 + 16),
    ]
};

/// Names of type numbers ggml once used and retired (their files cannot be read any more).
const RETIRED: &[(u32, &str)] = &[
    (4, "Q4_2"),
    (5, "Q4_3"),
    (31, "Q4_0_4_4"),
    (32, "Q4_0_4_8"),
    (33, "Q4_0_8_8"),
    (36, "IQ4_NL_4_4"),
    (37, "IQ4_NL_4_8"),
    (38, "IQ4_NL_8_8"),
];

impl GgmlType {
    /// The type with this number in a GGUF file, if it is a known one.
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|row| row.0 == id).map(|row| row.1)
    }

    fn row(self) -> (u32, GgmlType, usize, usize) {
        // Every variant has a row; the fallback is never taken.
        TABLE
            .iter()
            .copied()
            .find(|row| row.1 == self)
            .unwrap_or((0, GgmlType::F32, 1, 4))
    }

    /// The number of this type in a GGUF file.
    pub fn id(self) -> u32 {
        self.row().0
    }

    /// The name ggml gives this type (`Q4_K`, `BF16`, ...).
    pub fn name(self) -> String {
        format!("{self:?}")
    }

    /// How many values one block holds (1 for plain number types).
    pub fn block_size(self) -> usize {
        self.row().2
    }

    /// How many bytes one block takes.
    pub fn block_bytes(self) -> usize {
        self.row().3
    }

    /// The types [`crate::gguf::GgufFile::tensor_f32`] converts to f32: the float types, the
    /// legacy 32-value quants, the k-quants and the 4-bit non-linear quants (every type of
    /// llama.cpp's Q2_K … Q8_0 and IQ4_NL / IQ4_XS model files). The other i-quants need ggml's
    /// lattice tables and are refused by name.
    pub const DEQUANTIZABLE: [GgmlType; 15] = {
        use GgmlType::*;
        [
            F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL,
            IQ4_XS,
        ]
    };

    /// Whether [`crate::gguf::GgufFile::tensor_f32`] can convert this type to f32.
    pub fn can_dequantize(self) -> bool {
        Self::DEQUANTIZABLE.contains(&self)
    }

    /// "type 12 (Q4_K)" for error messages; unknown numbers are named when ggml once used them.
    pub fn describe_id(id: u32) -> String {
        match Self::from_id(id) {
            Some(t) => format!("type {id} ({})", t.name()),
            None => match RETIRED.iter().find(|r| r.0 == id) {
                Some((_, name)) => format!("type {id} ({name}, no longer supported by ggml)"),
                None => format!("type {id} (unknown)"),
            },
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
