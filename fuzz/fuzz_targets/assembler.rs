//! The receive-side assembler under arbitrary add/advance/remove_front
//! sequences, checked after every step against a byte-map model: the set of
//! offsets (relative to RCV.NXT) known to have arrived.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use tunstack::tcp::assembler::Assembler;

/// Offsets stay below this so the model (one entry per byte) stays small.
const SPACE: usize = 1 << 12;

fn ranges_of(model: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &o in model {
        match out.last_mut() {
            Some(r) if r.1 == o => r.1 += 1,
            _ => out.push((o, o + 1)),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, ops)) = data.split_first() else {
        return;
    };
    let max_ranges = usize::from(limit % 8) + 1;
    let mut asm = Assembler::new(max_ranges);
    let mut model: BTreeSet<usize> = BTreeSet::new();
    for op in ops.chunks_exact(5) {
        let a = usize::from(u16::from_le_bytes([op[1], op[2]])) % SPACE;
        let b = usize::from(u16::from_le_bytes([op[3], op[4]])) % SPACE;
        match op[0] % 4 {
            0 | 1 => {
                let before = asm.ranges().collect::<Vec<_>>();
                match asm.add(a, b) {
                    Ok(()) => model.extend(a..a + b),
                    Err(_) => {
                        // Refused only when a new range would be needed at the limit,
                        // and then nothing changed.
                        assert_eq!(asm.ranges().collect::<Vec<_>>(), before);
                        assert_eq!(asm.len(), max_ranges);
                        let mut m2 = model.clone();
                        m2.extend(a..a + b);
                        assert!(ranges_of(&m2).len() > max_ranges);
                    }
                }
            }
            2 => {
                asm.advance(a);
                model = model.range(a..).map(|o| o - a).collect();
            }
            _ => {
                let n = asm.remove_front();
                let expect = ranges_of(&model)
                    .first()
                    .filter(|r| r.0 == 0)
                    .map_or(0, |r| r.1);
                assert_eq!(n, expect);
                model = model.range(n..).map(|o| o - n).collect();
            }
        }
        let got: Vec<(usize, usize)> = asm.ranges().collect();
        assert_eq!(
            got,
            ranges_of(&model),
            "assembler disagrees with the byte map"
        );
        assert!(asm.len() <= max_ranges);
        assert_eq!(asm.is_empty(), model.is_empty());
    }
});
