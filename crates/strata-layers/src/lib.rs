//! The layer planner.
//!
//! Every store object is a candidate layer. When there are more objects than the layer budget
//! allows, the planner keeps a layer of its own for the most *popular* objects (those reached
//! most often from the roots, as in nixpkgs dockerTools' `closure-graph.py`) and puts the rest
//! together in one last layer. Popular objects are the ones most likely shared between images,
//! so giving them their own layers maximises the blobs that images share in a registry.

// Library crate: every public item is documented, and no input can make it panic through unwrap.
#![deny(missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One store object as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique, stable name of the object.
    pub id: String,
    /// Ids of the objects it refers to.
    pub references: Vec<String>,
}

/// A group of objects that must stay below the groups after it (the base half below the user
/// half), with the objects at its top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Ids of the group's top-level objects.
    pub roots: Vec<String>,
}

/// A layer of the plan: the ids of the objects it holds, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// Index of the group the layer belongs to.
    pub group: usize,
    /// The objects, most popular first.
    pub objects: Vec<String>,
}

/// Scores every object reachable from `roots` by popularity: a root scores 1, and each object
/// adds, for every object that refers to it, that referrer's own count of paths to it plus one.
/// This is the popularity contest of nixpkgs' `closure-graph.py`.
pub fn popularity(nodes: &[Node], roots: &[String]) -> BTreeMap<String, u64> {
    let refs: HashMap<&str, &[String]> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.references.as_slice()))
        .collect();
    let mut memo: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    let mut scores: BTreeMap<String, u64> = BTreeMap::new();
    for root in roots {
        *scores.entry(root.clone()).or_default() += 1;
        for (id, n) in contest(root, &refs, &mut memo, &mut Vec::new()) {
            *scores.entry(id).or_default() += n + 1;
        }
    }
    scores
}

/// The popularity of everything below `id`, counted over the tree of paths that starts there.
fn contest(
    id: &str,
    refs: &HashMap<&str, &[String]>,
    memo: &mut HashMap<String, BTreeMap<String, u64>>,
    stack: &mut Vec<String>,
) -> BTreeMap<String, u64> {
    if let Some(done) = memo.get(id) {
        return done.clone();
    }
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    // A reference cycle (possible between Debian packages) is cut where it closes.
    if stack.iter().any(|s| s == id) {
        return out;
    }
    stack.push(id.to_owned());
    let children: BTreeSet<&String> = refs
        .get(id)
        .map(|r| r.iter().filter(|c| c.as_str() != id).collect())
        .unwrap_or_default();
    for child in children {
        *out.entry(child.clone()).or_default() += 1;
        for (sub, n) in contest(child, refs, memo, stack) {
            *out.entry(sub).or_default() += n + 1;
        }
    }
    stack.pop();
    memo.insert(id.to_owned(), out.clone());
    out
}

/// Every object reachable from `roots`, `roots` included.
fn closure(nodes: &[Node], roots: &[String]) -> BTreeSet<String> {
    let refs: HashMap<&str, &[String]> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.references.as_slice()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(id) = todo.pop() {
        if seen.insert(id.to_owned())
            && let Some(children) = refs.get(id)
        {
            todo.extend(children.iter().map(String::as_str));
        }
    }
    seen
}

/// Plans the layers for `groups` within `budget` layers (at least one per non-empty group).
///
/// An object belongs to the first group whose roots reach it, so what the user half shares
/// with the base half stays in the base layers. Within a group objects are ordered by
/// popularity (most popular first, ties by id); if a group has more objects than layers, its
/// last layer holds all the remaining ones. Each group gets a share of the budget in proportion
/// to its number of objects. The result depends only on the graph, never on input order.
pub fn plan(nodes: &[Node], groups: &[Group], budget: usize) -> Vec<PlannedLayer> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut members: Vec<Vec<String>> = Vec::new();
    for group in groups {
        // Scored from this group's own roots: what a later group holds never reorders it.
        let scores = popularity(nodes, &group.roots);
        let mut mine: Vec<String> = closure(nodes, &group.roots)
            .into_iter()
            .filter(|id| !taken.contains(id))
            .collect();
        taken.extend(mine.iter().cloned());
        mine.sort_by(|a, b| {
            let (sa, sb) = (scores.get(a).copied(), scores.get(b).copied());
            sb.cmp(&sa).then_with(|| a.cmp(b))
        });
        members.push(mine);
    }

    let shares = share_budget(&members.iter().map(Vec::len).collect::<Vec<_>>(), budget);
    let mut layers = Vec::new();
    for (group, (objects, share)) in members.into_iter().zip(shares).enumerate() {
        if objects.is_empty() {
            continue;
        }
        if objects.len() <= share {
            layers.extend(objects.into_iter().map(|id| PlannedLayer {
                group,
                objects: vec![id],
            }));
        } else {
            let mut rest = objects;
            let tail = rest.split_off(share.saturating_sub(1));
            layers.extend(rest.into_iter().map(|id| PlannedLayer {
                group,
                objects: vec![id],
            }));
            layers.push(PlannedLayer {
                group,
                objects: tail,
            });
        }
    }
    layers
}

/// Splits `budget` layers between groups of the given sizes so that no group's share depends
/// on the groups after it: each later group has a reserve of a fifth of the budget (at least one
/// layer) that earlier groups may not use, and takes what earlier groups left, up to its size.
/// So the base half's layers, and the image name, never change because of the user half.
fn share_budget(sizes: &[usize], budget: usize) -> Vec<usize> {
    let reserve = (budget / 5).max(1);
    let mut left = budget;
    let mut shares = Vec::with_capacity(sizes.len());
    for (i, &n) in sizes.iter().enumerate() {
        let later = sizes.len() - i - 1;
        let cap = left.saturating_sub(reserve * later).max(1);
        let share = n.min(cap);
        shares.push(share);
        left = left.saturating_sub(share);
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Vec<Node> {
        edges
            .iter()
            .map(|(id, refs)| Node {
                id: (*id).into(),
                references: refs.iter().map(|r| (*r).into()).collect(),
            })
            .collect()
    }

    fn worked_example() -> Vec<Node> {
        graph(&[
            ("A", &["B", "G"]),
            ("B", &["C", "E"]),
            ("C", &["D", "E"]),
            ("D", &["F"]),
            ("E", &["F"]),
            ("F", &[]),
            ("G", &[]),
        ])
    }

    #[test]
    fn popularity_of_the_closure_graph_worked_example() {
        let scores = popularity(&worked_example(), &["A".into()]);
        let want: BTreeMap<String, u64> = [
            ("A", 1),
            ("B", 2),
            ("C", 3),
            ("D", 4),
            ("E", 5),
            ("F", 9),
            ("G", 2),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(scores, want);
    }

    #[test]
    fn most_popular_get_own_layers_and_the_rest_share_the_last() {
        let groups = [Group {
            roots: vec!["A".into()],
        }];
        let layers = plan(&worked_example(), &groups, 4);
        let got: Vec<Vec<&str>> = layers
            .iter()
            .map(|l| l.objects.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            got,
            vec![vec!["F"], vec!["E"], vec!["D"], vec!["C", "B", "G", "A"]]
        );

        let roomy = plan(&worked_example(), &groups, 100);
        assert_eq!(
            roomy.len(),
            7,
            "within budget every object has its own layer"
        );
    }

    #[test]
    fn plan_does_not_depend_on_input_order() {
        let groups = [Group {
            roots: vec!["A".into()],
        }];
        let mut shuffled = worked_example();
        shuffled.reverse();
        assert_eq!(
            plan(&worked_example(), &groups, 3),
            plan(&shuffled, &groups, 3)
        );
    }

    #[test]
    fn shared_objects_stay_in_the_base_group() {
        let nodes = graph(&[
            ("base", &["lib"]),
            ("user", &["lib", "tool"]),
            ("lib", &[]),
            ("tool", &[]),
        ]);
        let groups = [
            Group {
                roots: vec!["base".into()],
            },
            Group {
                roots: vec!["user".into()],
            },
        ];
        let layers = plan(&nodes, &groups, 100);
        let user: Vec<&str> = layers
            .iter()
            .filter(|l| l.group == 1)
            .flat_map(|l| l.objects.iter().map(String::as_str))
            .collect();
        assert_eq!(user, ["tool", "user"]);
        assert!(layers.iter().any(|l| l.group == 0 && l.objects == ["lib"]));
    }

    #[test]
    fn budget_is_shared_and_respected() {
        assert_eq!(share_budget(&[300, 10], 99), vec![80, 10]);
        assert_eq!(share_budget(&[300, 40], 99), vec![80, 19]);
        assert_eq!(share_budget(&[5, 40], 99), vec![5, 40]);
        assert_eq!(share_budget(&[300, 0], 99), vec![80, 0]);
        assert_eq!(share_budget(&[5, 5], 4), vec![3, 1]);
        assert_eq!(
            share_budget(&[3, 3], 2),
            vec![1, 1],
            "one layer per group at least"
        );
    }

    #[test]
    fn the_user_group_never_changes_the_base_layers() {
        let base: Vec<(&str, &[&str])> = vec![
            ("b1", &["lib"]),
            ("b2", &["lib"]),
            ("b3", &[]),
            ("lib", &[]),
        ];
        let mut small = base.clone();
        small.push(("u1", &["b3"]));
        let mut large = base.clone();
        for u in ["u1", "u2", "u3", "u4", "u5", "u6"] {
            large.push((u, &["b3", "b3"]));
        }
        let groups = |users: &[&str]| {
            [
                Group {
                    roots: vec!["b1".into(), "b2".into(), "b3".into()],
                },
                Group {
                    roots: users.iter().map(|u| (*u).to_owned()).collect(),
                },
            ]
        };
        for budget in [2, 3, 5, 10] {
            let a = plan(&graph(&small), &groups(&["u1"]), budget);
            let b = plan(
                &graph(&large),
                &groups(&["u1", "u2", "u3", "u4", "u5", "u6"]),
                budget,
            );
            let base_of = |p: &[PlannedLayer]| -> Vec<Vec<String>> {
                p.iter()
                    .filter(|l| l.group == 0)
                    .map(|l| l.objects.clone())
                    .collect()
            };
            assert_eq!(base_of(&a), base_of(&b), "budget {budget}");
            assert!(b.len() <= budget, "budget {budget}: {} layers", b.len());
        }
    }
}
