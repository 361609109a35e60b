//! Dirty page ranges: what one harvest of the dirty log says changed, as guest-physical
//! `{gpa, len}` ranges (cloud-hypervisor's `MemoryRangeTable` shape), coalesced from a region's
//! bitmap words so that a run of dirty pages travels as one range.

use serde::{Deserialize, Serialize};

/// Pages `gpa..gpa + len` were written since the previous harvest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DirtyRange {
    /// First guest-physical address (page aligned).
    pub gpa: u64,
    /// Bytes (a whole number of pages).
    pub len: u64,
}

impl DirtyRange {
    /// One past the last address.
    pub fn end(&self) -> u64 {
        self.gpa + self.len
    }

    /// Whether `gpa` lies inside the range.
    pub fn contains(&self, gpa: u64) -> bool {
        (self.gpa..self.end()).contains(&gpa)
    }
}

/// Appends to `out` the ranges of the set bits of `words` (bit *i* of word *w* is page
/// `64 * w + i` of a region starting at `base`, `page_size` bytes per page), merging a range
/// with the last one in `out` when they touch (adjacent regions).
pub fn coalesce_into(out: &mut Vec<DirtyRange>, words: &[u64], base: u64, page_size: u64) {
    for (w, &word) in (0u64..).zip(words) {
        let mut bits = word;
        while bits != 0 {
            let first = u64::from(bits.trailing_zeros());
            // The run of ones from `first` up: shift it down and count the trailing ones.
            let run = u64::from((bits >> first).trailing_ones());
            let gpa = base + (w * 64 + first) * page_size;
            let len = run * page_size;
            match out.last_mut() {
                Some(last) if last.end() == gpa => last.len += len,
                _ => out.push(DirtyRange { gpa, len }),
            }
            bits = if first + run >= 64 {
                0
            } else {
                bits & !(((1u64 << run) - 1) << first)
            };
        }
    }
}

/// Total bytes of `ranges`.
pub fn total_bytes(ranges: &[DirtyRange]) -> u64 {
    ranges.iter().map(|r| r.len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;

    fn ranges(words: &[u64], base: u64) -> Vec<DirtyRange> {
        let mut out = Vec::new();
        coalesce_into(&mut out, words, base, PAGE);
        out
    }

    #[test]
    fn runs_become_single_ranges() {
        assert_eq!(ranges(&[0], 0), vec![]);
        assert_eq!(
            ranges(&[0b1011_0001], 0x10000),
            vec![
                DirtyRange {
                    gpa: 0x10000,
                    len: PAGE
                },
                DirtyRange {
                    gpa: 0x10000 + 4 * PAGE,
                    len: 2 * PAGE
                },
                DirtyRange {
                    gpa: 0x10000 + 7 * PAGE,
                    len: PAGE
                },
            ]
        );
    }

    #[test]
    fn runs_cross_word_boundaries_and_fill_words() {
        assert_eq!(
            ranges(&[1 << 63, u64::MAX, 1], 0),
            vec![DirtyRange {
                gpa: 63 * PAGE,
                len: 66 * PAGE
            }]
        );
        assert_eq!(
            ranges(&[u64::MAX], 0),
            vec![DirtyRange {
                gpa: 0,
                len: 64 * PAGE
            }]
        );
    }

    #[test]
    fn adjacent_regions_merge_and_gaps_do_not() {
        let mut out = Vec::new();
        coalesce_into(&mut out, &[1 << 63], 0, PAGE);
        coalesce_into(&mut out, &[1], 64 * PAGE, PAGE);
        coalesce_into(&mut out, &[1], 1 << 30, PAGE);
        assert_eq!(
            out,
            vec![
                DirtyRange {
                    gpa: 63 * PAGE,
                    len: 2 * PAGE
                },
                DirtyRange {
                    gpa: 1 << 30,
                    len: PAGE
                },
            ]
        );
        assert_eq!(total_bytes(&out), 3 * PAGE);
    }
}
