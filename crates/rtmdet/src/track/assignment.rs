//! Minimum-cost matching with a cost limit, as ByteTrack calls `lap.lapjv(cost,
//! extend_cost=True, cost_limit=thresh)`: the `n × m` costs are extended to a square matrix
//! whose extra cells cost `thresh / 2` (and 0 between two extra cells), so a pair is matched
//! only when that beats leaving both unmatched, i.e. when its cost is below `thresh`.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

/// Costs are matched as integers of this resolution (IoU distances are in [0, 1]).
const SCALE: f64 = 1e9;

/// The matched `(row, column)` pairs and the unmatched rows and columns.
#[derive(Debug, Default, PartialEq)]
pub struct Assignment {
    pub matches: Vec<(usize, usize)>,
    pub unmatched_rows: Vec<usize>,
    pub unmatched_cols: Vec<usize>,
}

/// Matches the rows and columns of `cost` (`rows × cols`, row-major) under `thresh`.
pub fn linear_assignment(cost: &[f64], rows: usize, cols: usize, thresh: f64) -> Assignment {
    if rows == 0 || cols == 0 {
        return Assignment {
            matches: vec![],
            unmatched_rows: (0..rows).collect(),
            unmatched_cols: (0..cols).collect(),
        };
    }
    let n = rows + cols;
    let half = (thresh / 2.0 * SCALE).round() as i64;
    let mut m = Matrix::new(n, n, half);
    for r in 0..rows {
        for c in 0..cols {
            m[(r, c)] = (cost[r * cols + c] * SCALE).round() as i64;
        }
    }
    for r in rows..n {
        for c in cols..n {
            m[(r, c)] = 0;
        }
    }
    let (_, columns) = kuhn_munkres_min(&m);
    let mut out = Assignment::default();
    let mut col_used = vec![false; cols];
    for (r, &c) in columns.iter().enumerate().take(rows) {
        if c < cols {
            out.matches.push((r, c));
            col_used[c] = true;
        } else {
            out.unmatched_rows.push(r);
        }
    }
    out.unmatched_cols = (0..cols).filter(|&c| !col_used[c]).collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_above_the_limit_stay_unmatched() {
        // (1, 1) costs 0.9 > 0.8: leaving row 1 and column 1 unmatched (0.4 + 0.4) is cheaper.
        let cost = [0.1, 0.95, 0.2, 0.9];
        let a = linear_assignment(&cost, 2, 2, 0.8);
        assert_eq!(a, Assignment { matches: vec![(0, 0)], unmatched_rows: vec![1], unmatched_cols: vec![1] });
        // Under a limit of 1.0 the global optimum pairs both rows.
        let a = linear_assignment(&cost, 2, 2, 1.0);
        assert_eq!(a.matches, vec![(0, 0), (1, 1)]);
        // The optimum, not a greedy choice: row 0 gives up its best column.
        let a = linear_assignment(&[0.1, 0.2, 0.15, 0.9], 2, 2, 0.8);
        assert_eq!(a.matches, vec![(0, 1), (1, 0)]);
    }
}
