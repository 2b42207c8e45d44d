//! The tensor table each backend keeps: every declared tensor's name, length and
//! [`Class`], the views into it, and, once the backend has laid its arenas out,
//! where each tensor lives (arena index and element offset).
//!
//! Invariants: a view has its parent's class and lies inside it; a parent is
//! declared before its views, so one pass in id order places every view after
//! its parent; a root tensor is placed once and never moves.

use super::{Class, TensorId};
use crate::error::{Result, TrainerError, ensure};

/// One declared tensor.
struct Entry {
    name: String,
    class: Class,
    len: usize,
    /// (arena index, element offset) once laid out.
    place: Option<(usize, usize)>,
    /// Parent tensor and element offset, for views.
    parent: Option<(TensorId, usize)>,
}

/// Where a laid-out tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Index of the arena (in the order the backend created them).
    pub arena: usize,
    /// Offset of the first element, in elements of the arena.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
    /// The tensor's class.
    pub class: Class,
}

/// The declared tensors of one backend, in id order.
#[derive(Default)]
pub(crate) struct TensorTable {
    entries: Vec<Entry>,
}

impl TensorTable {
    /// Declares a root tensor of `len` elements; it is placed by the next [`Self::lay_out`].
    pub fn declare(&mut self, name: &str, len: usize, class: Class) -> TensorId {
        self.entries.push(Entry {
            name: name.to_string(),
            class,
            len,
            place: None,
            parent: None,
        });
        TensorId(self.entries.len() - 1)
    }

    /// Declares elements `offset..offset + len` of `parent` as a tensor of its own;
    /// placed at once when the parent already is.
    pub fn view(&mut self, parent: TensorId, offset: usize, len: usize) -> Result<TensorId> {
        let p = &self.entries[parent.0];
        ensure(offset + len <= p.len, "view", || {
            format!(
                "{}..{} outside {} of {} elements",
                offset,
                offset + len,
                p.name,
                p.len
            )
        })?;
        let entry = Entry {
            name: format!("{}[{}..{}]", p.name, offset, offset + len),
            class: p.class,
            len,
            place: p.place.map(|(a, o)| (a, o + offset)),
            parent: Some((parent, offset)),
        };
        self.entries.push(entry);
        Ok(TensorId(self.entries.len() - 1))
    }

    /// Places every not yet placed root tensor of `class` one after another in
    /// arena `arena`, each starting at a multiple of `align` elements. Returns the
    /// arena's length in elements, or `None` when no tensor went there (then the
    /// backend creates no arena).
    pub fn lay_out(&mut self, class: Class, arena: usize, align: usize) -> Option<usize> {
        let mut total = 0;
        let mut any = false;
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.class == class && e.place.is_none() && e.parent.is_none())
        {
            e.place = Some((arena, total));
            total += e.len.div_ceil(align) * align;
            any = true;
        }
        any.then_some(total)
    }

    /// Places every view whose parent has been placed (call after the last [`Self::lay_out`]).
    pub fn place_views(&mut self) {
        for i in 0..self.entries.len() {
            if let (None, Some((p, off))) = (self.entries[i].place, self.entries[i].parent) {
                // Parents come before their views, so the parent is placed by now
                // when it was a root, or earlier in this loop when it was a view.
                self.entries[i].place = self.entries[p.0].place.map(|(a, o)| (a, o + off));
            }
        }
    }

    /// Number of tensors declared so far (ids are `0..count()`).
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// A tensor's length in elements.
    pub fn len(&self, t: TensorId) -> usize {
        self.entries[t.0].len
    }

    /// A tensor's name (a view's name is its parent's with the element range).
    pub fn name(&self, t: TensorId) -> &str {
        &self.entries[t.0].name
    }

    /// A tensor's class.
    pub fn class(&self, t: TensorId) -> Class {
        self.entries[t.0].class
    }

    /// Where a tensor lives; an error naming it before the layout.
    pub fn placement(&self, t: TensorId) -> Result<Placement> {
        let e = &self.entries[t.0];
        let (arena, offset) = e.place.ok_or_else(|| TrainerError::NotMaterialized {
            name: e.name.clone(),
        })?;
        Ok(Placement {
            arena,
            offset,
            len: e.len,
            class: e.class,
        })
    }

    /// An error for `op` unless tensor `t` holds at least `need` elements.
    pub fn need_len(&self, op: &'static str, t: TensorId, need: usize) -> Result<()> {
        let e = &self.entries[t.0];
        ensure(e.len >= need, op, || {
            format!("tensor {} has {} elements, needs {need}", e.name, e.len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_aligned_and_views_follow_their_parents() {
        let mut t = TensorTable::default();
        let a = t.declare("a", 5, Class::Activation);
        let w = t.declare("w", 3, Class::Weight);
        let b = t.declare("b", 7, Class::Activation);
        let b_tail = t.view(b, 2, 4).unwrap();
        let b_tail_head = t.view(b_tail, 1, 2).unwrap();
        assert!(
            t.placement(b_tail).is_err(),
            "nothing is placed before the layout"
        );
        assert_eq!(t.lay_out(Class::Activation, 0, 4), Some(8 + 8));
        assert_eq!(t.lay_out(Class::Weight, 1, 1), Some(3));
        assert_eq!(t.lay_out(Class::Stat, 2, 1), None);
        t.place_views();
        let at = |t: &TensorTable, id| {
            let p = t.placement(id).unwrap();
            (p.arena, p.offset, p.len)
        };
        assert_eq!(at(&t, a), (0, 0, 5));
        assert_eq!(at(&t, b), (0, 8, 7));
        assert_eq!(at(&t, w), (1, 0, 3));
        assert_eq!(at(&t, b_tail), (0, 10, 4));
        assert_eq!(at(&t, b_tail_head), (0, 11, 2));
        assert_eq!(t.name(b_tail_head), "b[2..6][1..3]");
        assert_eq!(t.class(b_tail_head), Class::Activation);
        // A view declared after the layout is placed at once.
        let late = t.view(w, 1, 2).unwrap();
        assert_eq!(at(&t, late), (1, 1, 2));
        assert!(t.view(w, 2, 2).is_err(), "a view may not leave its parent");
        assert!(t.need_len("op", b, 8).is_err());
        assert!(t.need_len("op", b, 7).is_ok());
    }
}
