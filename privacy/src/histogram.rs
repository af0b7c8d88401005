//! Vote histograms from teachers' labels, and their noise-free plurality:
//! what the aggregator counts before it adds noise, and what the CLI's
//! measurements (the lab's ensemble accuracy, an experiment's certified
//! votes) count without noise. Votes come as `votes[teacher][item]`.

use crate::special::argmax;

/// One histogram per item: `counts[item][class]` is how many teachers gave
/// `item` the label `class`. The items are the first teacher's; a label
/// outside `0..classes`, or an item a shorter teacher vector lacks, counts
/// for nothing.
pub fn histograms(votes: &[Vec<u8>], classes: usize) -> Vec<Vec<u32>> {
    let items = votes.first().map_or(0, Vec::len);
    let mut counts = vec![vec![0u32; classes]; items];
    for teacher in votes {
        for (item, &label) in counts.iter_mut().zip(teacher) {
            if let Some(c) = item.get_mut(usize::from(label)) {
                *c += 1;
            }
        }
    }
    counts
}

/// The noise-free plurality winner of each item (ties to the lowest class,
/// as the aggregator's noisy max breaks them; class 0 for an item with no
/// classes).
pub fn plurality(votes: &[Vec<u8>], classes: usize) -> Vec<u8> {
    histograms(votes, classes)
        .iter()
        .map(|h| argmax(h).unwrap_or(0) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_every_vote() {
        let h = histograms(&[vec![0, 1], vec![0, 2], vec![1, 2]], 3);
        assert_eq!(h, vec![vec![2, 1, 0], vec![0, 1, 2]]);
        assert!(histograms(&[], 3).is_empty());
    }

    #[test]
    fn out_of_range_labels_and_short_teachers_count_for_nothing() {
        let h = histograms(&[vec![0, 1, 2], vec![7, 1], vec![1]], 3);
        assert_eq!(h, vec![vec![1, 1, 0], vec![0, 2, 0], vec![0, 0, 1]]);
    }

    #[test]
    fn plurality_takes_the_most_votes_and_breaks_ties_low() {
        let votes = vec![vec![1, 2, 0], vec![1, 0, 2], vec![0, 2, 1]];
        assert_eq!(plurality(&votes, 3), vec![1, 2, 0]);
    }
}
