//! Labels mapped onto a trained head by name: a base model's head fixes the id of each class, a
//! data set names its classes in whatever order its loader makes (the JSON-lines loader sorts
//! names; integer labels are named "0", "1", …). Only a class the head does not know is an
//! error; the data may use a subset of the head's classes.
use std::collections::HashMap;

use super::example::Benchmark;
use crate::{Error, Result};

impl Benchmark {
    /// Renumbers every example's label to the head's id of the same name and takes the head's
    /// label names. A data label that is no head name but a decimal integer below the head's
    /// size is that id (integer labels in a JSON-lines file). Two data labels that would land
    /// on one head label, or a label the head does not know, are errors; nothing is changed
    /// then.
    pub fn align_labels(&mut self, head: &[String]) -> Result<()> {
        let by_name: HashMap<&str, usize> = head
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut map = Vec::with_capacity(self.label_names.len());
        for name in &self.label_names {
            let id = match by_name.get(name.as_str()) {
                Some(&j) => j,
                None => match name.parse::<usize>() {
                    Ok(j) if j < head.len() => j,
                    _ => {
                        return Err(Error::Mismatch(format!(
                            "label `{name}` of {} is not one the base model's head knows \
                             (it was trained for {head:?})",
                            self.name
                        )))
                    }
                },
            };
            if let Some(k) = map.iter().position(|&m| m == id) {
                return Err(Error::Mismatch(format!(
                    "labels `{}` and `{name}` of {} both mean the head's `{}`",
                    self.label_names[k], self.name, head[id]
                )));
            }
            map.push(id);
        }
        for c in &mut self.clients {
            for e in c.train.iter_mut().chain(c.test.iter_mut()) {
                // Loaders give ids below `label_names.len()`; anything else was never a name.
                e.label = *map.get(e.label).ok_or(Error::Label {
                    label: e.label,
                    num_labels: map.len(),
                })?;
            }
        }
        self.label_names = head.to_vec();
        self.num_labels = head.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{ClientData, Example, Pool};

    fn bench(names: &[&str], labels: &[usize]) -> Benchmark {
        let ex = |l: usize| Example {
            text: format!("t{l}"),
            label: l,
            client: "c".into(),
            language: "en".into(),
        };
        Benchmark {
            name: "d".into(),
            num_labels: names.len(),
            label_names: names.iter().map(|s| s.to_string()).collect(),
            clients: vec![ClientData {
                id: "c".into(),
                language: "en".into(),
                pool: Pool::Seen,
                train: labels.iter().map(|&l| ex(l)).collect(),
                test: vec![ex(0)],
            }],
        }
    }

    fn head() -> Vec<String> {
        ["smileys-emotion", "people-body", "activities", "objects"]
            .map(String::from)
            .to_vec()
    }

    fn labels(b: &Benchmark) -> Vec<usize> {
        b.clients[0].train.iter().map(|e| e.label).collect()
    }

    #[test]
    fn names_map_in_any_order_and_a_subset_is_fine() -> Result<()> {
        // Sorted as the JSON-lines loader sorts them: activities, objects, smileys-emotion.
        let mut b = bench(&["activities", "objects", "smileys-emotion"], &[0, 1, 2, 2]);
        b.align_labels(&head())?;
        assert_eq!(labels(&b), vec![2, 3, 0, 0]);
        assert_eq!(b.clients[0].test[0].label, 2);
        assert_eq!((b.num_labels, b.label_names.clone()), (4, head()));
        Ok(())
    }

    #[test]
    fn integer_labels_are_head_ids() -> Result<()> {
        let mut b = bench(&["0", "1", "2", "3"], &[3, 1]);
        b.align_labels(&head())?;
        assert_eq!(labels(&b), vec![3, 1]);
        Ok(())
    }

    #[test]
    fn unknown_or_colliding_labels_are_refused_and_nothing_changes() {
        let mut b = bench(&["activities", "flags"], &[0, 1]);
        let e = b
            .align_labels(&head())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("`flags`") && e.contains("smileys-emotion"),
            "{e}"
        );
        assert_eq!(labels(&b), vec![0, 1]);
        let mut b = bench(&["4"], &[0]);
        assert!(
            b.align_labels(&head()).is_err(),
            "id 4 is outside a 4-label head"
        );
        let mut b = bench(&["activities", "2"], &[0, 1]);
        let e = b
            .align_labels(&head())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("both mean"), "{e}");
    }
}
