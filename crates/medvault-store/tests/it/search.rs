//! Search over current resources: token AND/OR, id and time filters, paging and ordering.

use medvault_store::{SqliteStore, Store, StoreQuery, Token};
use tempfile::TempDir;

use crate::common::{create, delete, ids, open_store, record, tok, update};

const A: u8 = 0xA;
const B: u8 = 0xB;
const C: u8 = 0xC;

/// Patients written in this order (deliberately not sorted by id), with tokens and times:
/// p3 {A,B} @1000, p1 {A,C} @2000, p5 {B,C} @3000, p2 {A} @4000, p4 {} @5000.
/// Plus an Observation "o1" carrying every token, which a Patient search must never return.
fn fixture() -> (TempDir, SqliteStore) {
    let (dir, store) = open_store();
    let rows: [(&str, i64, &[Token]); 5] = [
        ("p3", 1000, &[tok(A), tok(B)]),
        ("p1", 2000, &[tok(A), tok(C)]),
        ("p5", 3000, &[tok(B), tok(C)]),
        ("p2", 4000, &[tok(A)]),
        ("p4", 5000, &[]),
    ];
    for (id, ms, tokens) in rows {
        store.write(&[create("Patient", id, ms, tokens)]).unwrap();
    }
    store
        .write(&[create("Observation", "o1", 1500, &[tok(A), tok(B), tok(C)])])
        .unwrap();
    (dir, store)
}

fn patients() -> StoreQuery {
    StoreQuery {
        rtype: "Patient".into(),
        ..StoreQuery::default()
    }
}

fn tokens(groups: &[&[u8]]) -> StoreQuery {
    StoreQuery {
        all_of: groups
            .iter()
            .map(|g| g.iter().map(|&t| tok(t)).collect())
            .collect(),
        ..patients()
    }
}

/// Runs the query both paged (one big page) and unpaged and checks they agree.
fn found(store: &SqliteStore, query: &StoreQuery) -> Vec<String> {
    let all = store.search_all(query).unwrap();
    let page = store.search(query, 0, 1000).unwrap();
    assert_eq!(page.records, all, "search and search_all disagree");
    assert_eq!(page.total, all.len() as u64);
    all.into_iter().map(|r| r.id).collect()
}

#[test]
fn no_filters_returns_every_current_resource_in_insertion_order() {
    let (_dir, store) = fixture();
    assert_eq!(found(&store, &patients()), ["p3", "p1", "p5", "p2", "p4"]);
    assert_eq!(
        store.search_all(&patients()).unwrap()[1],
        record("Patient", "p1", 1, 2000)
    );
    let obs = StoreQuery {
        rtype: "Observation".into(),
        ..StoreQuery::default()
    };
    assert_eq!(found(&store, &obs), ["o1"]);
    let none = StoreQuery {
        rtype: "Encounter".into(),
        ..StoreQuery::default()
    };
    assert!(found(&store, &none).is_empty());
}

#[test]
fn single_token() {
    let (_dir, store) = fixture();
    assert_eq!(found(&store, &tokens(&[&[A]])), ["p3", "p1", "p2"]);
    assert_eq!(found(&store, &tokens(&[&[B]])), ["p3", "p5"]);
    assert!(found(&store, &tokens(&[&[0xEE]])).is_empty());
}

#[test]
fn and_across_groups() {
    let (_dir, store) = fixture();
    assert_eq!(found(&store, &tokens(&[&[A], &[B]])), ["p3"]);
    assert_eq!(found(&store, &tokens(&[&[A], &[C]])), ["p1"]);
    assert!(found(&store, &tokens(&[&[A], &[B], &[C]])).is_empty());
    // The same group twice is the same as once.
    assert_eq!(found(&store, &tokens(&[&[A], &[A]])), ["p3", "p1", "p2"]);
}

#[test]
fn or_within_a_group() {
    let (_dir, store) = fixture();
    assert_eq!(found(&store, &tokens(&[&[B, C]])), ["p3", "p1", "p5"]);
    assert_eq!(
        found(&store, &tokens(&[&[A, B, C]])),
        ["p3", "p1", "p5", "p2"]
    );
    // A resource matching several alternatives is returned once.
    assert_eq!(found(&store, &tokens(&[&[A, B]])), ["p3", "p1", "p5", "p2"]);
}

#[test]
fn and_of_ors() {
    let (_dir, store) = fixture();
    // (A) AND (B OR C)
    assert_eq!(found(&store, &tokens(&[&[A], &[B, C]])), ["p3", "p1"]);
    // (A OR B) AND (C OR 0xEE)
    assert_eq!(found(&store, &tokens(&[&[A, B], &[C, 0xEE]])), ["p1", "p5"]);
}

#[test]
fn an_empty_group_matches_nothing() {
    let (_dir, store) = fixture();
    assert!(found(&store, &tokens(&[&[]])).is_empty());
    assert!(found(&store, &tokens(&[&[A], &[]])).is_empty());
}

#[test]
fn ids_filter() {
    let (_dir, store) = fixture();
    let q = StoreQuery {
        ids: Some(vec![
            "p2".into(),
            "p3".into(),
            "missing".into(),
            "o1".into(),
        ]),
        ..patients()
    };
    // Insertion order, not the order of the id list.
    assert_eq!(found(&store, &q), ["p3", "p2"]);

    let q = StoreQuery {
        ids: Some(vec!["p1".into(), "p2".into(), "p5".into()]),
        ..tokens(&[&[A]])
    };
    assert_eq!(found(&store, &q), ["p1", "p2"]);

    let q = StoreQuery {
        ids: Some(Vec::new()),
        ..patients()
    };
    assert!(found(&store, &q).is_empty());
}

#[test]
fn updated_bounds_are_inclusive_from_and_exclusive_until() {
    let (_dir, store) = fixture();
    let q = |from: Option<i64>, until: Option<i64>| StoreQuery {
        updated_from_ms: from,
        updated_until_ms: until,
        ..patients()
    };
    assert_eq!(found(&store, &q(Some(2000), Some(4000))), ["p1", "p5"]);
    assert_eq!(found(&store, &q(Some(2001), Some(4001))), ["p5", "p2"]);
    assert_eq!(found(&store, &q(Some(4000), None)), ["p2", "p4"]);
    assert_eq!(found(&store, &q(None, Some(2000))), ["p3"]);
    assert!(found(&store, &q(Some(3000), Some(3000))).is_empty());

    let combined = StoreQuery {
        updated_from_ms: Some(1500),
        ..tokens(&[&[A]])
    };
    assert_eq!(found(&store, &combined), ["p1", "p2"]);
}

#[test]
fn paging_with_total() {
    let (_dir, store) = fixture();
    let q = patients();

    let page = store.search(&q, 0, 2).unwrap();
    assert_eq!(ids(&page.records), ["p3", "p1"]);
    assert_eq!(page.total, 5);

    let page = store.search(&q, 2, 2).unwrap();
    assert_eq!(ids(&page.records), ["p5", "p2"]);
    assert_eq!(page.total, 5);

    let page = store.search(&q, 4, 2).unwrap();
    assert_eq!(ids(&page.records), ["p4"]);
    assert_eq!(page.total, 5);

    let page = store.search(&q, 10, 2).unwrap();
    assert!(page.records.is_empty());
    assert_eq!(page.total, 5);

    let page = store.search(&q, 0, 0).unwrap();
    assert!(page.records.is_empty());
    assert_eq!(page.total, 5);

    // The total counts matches of the filter, not the page.
    let page = store.search(&tokens(&[&[A]]), 1, 1).unwrap();
    assert_eq!(ids(&page.records), ["p1"]);
    assert_eq!(page.total, 3);
}

#[test]
fn search_all_returns_everything_beyond_any_page_size() {
    let (_dir, store) = open_store();
    let batch: Vec<_> = (0..250)
        .map(|i| create("Patient", &format!("id-{i:03}"), i, &[tok((i % 2) as u8)]))
        .collect();
    store.write(&batch).unwrap();

    let all = store.search_all(&patients()).unwrap();
    assert_eq!(all.len(), 250);
    let expected: Vec<String> = (0..250).map(|i| format!("id-{i:03}")).collect();
    assert_eq!(ids(&all), expected);

    let odd = store
        .search_all(&StoreQuery {
            all_of: vec![vec![tok(1)]],
            ..patients()
        })
        .unwrap();
    assert_eq!(odd.len(), 125);
    assert!(odd.iter().all(|r| r.updated_ms % 2 == 1));
    assert_eq!(store.search(&patients(), 0, 10).unwrap().total, 250);
}

#[test]
fn only_the_current_version_is_returned_and_old_tokens_are_gone() {
    let (_dir, store) = fixture();
    // p3 drops A and B for C.
    store
        .write(&[update("Patient", "p3", 2, 6000, &[tok(C)])])
        .unwrap();

    assert_eq!(found(&store, &tokens(&[&[A]])), ["p1", "p2"]);
    assert_eq!(found(&store, &tokens(&[&[B]])), ["p5"]);
    assert!(found(&store, &tokens(&[&[A], &[B]])).is_empty());
    assert!(found(&store, &tokens(&[&[C]])).contains(&"p3".to_owned()));

    // One row per resource, and it is the new version.
    let all = store.search_all(&patients()).unwrap();
    assert_eq!(all.len(), 5);
    let p3 = all.iter().find(|r| r.id == "p3").unwrap();
    assert_eq!(*p3, record("Patient", "p3", 2, 6000));

    // Time filters apply to the current version only: p3's old timestamp no longer matches.
    let early = StoreQuery {
        updated_until_ms: Some(1500),
        ..patients()
    };
    assert!(found(&store, &early).is_empty());
}

#[test]
fn deleted_resources_are_not_found() {
    let (_dir, store) = fixture();
    store.write(&[delete("Patient", "p1", 2, 7000)]).unwrap();
    assert_eq!(found(&store, &patients()), ["p3", "p5", "p2", "p4"]);
    assert_eq!(found(&store, &tokens(&[&[C]])), ["p5"]);
    let q = StoreQuery {
        ids: Some(vec!["p1".into()]),
        ..patients()
    };
    assert!(found(&store, &q).is_empty());
    assert_eq!(store.search(&patients(), 0, 1).unwrap().total, 4);
}

#[test]
fn postings_shared_by_a_batch_lose_exactly_the_retired_versions() {
    let (dir, store) = open_store();
    // One batch: one posting for A holding all four rows.
    store
        .write(&[
            create("Patient", "p1", 10, &[tok(A)]),
            create("Patient", "p2", 11, &[tok(A)]),
            create("Patient", "p3", 12, &[tok(A)]),
            create("Patient", "p4", 13, &[tok(A), tok(C)]),
        ])
        .unwrap();
    assert_eq!(found(&store, &tokens(&[&[A]])), ["p1", "p2", "p3", "p4"]);
    // Retire the posting's first, a middle and its last row, in separate commits.
    store
        .write(&[update("Patient", "p1", 2, 20, &[tok(B)])])
        .unwrap();
    store.write(&[delete("Patient", "p3", 2, 21)]).unwrap();
    store
        .write(&[update("Patient", "p4", 2, 22, &[tok(A)])])
        .unwrap();
    assert_eq!(found(&store, &tokens(&[&[A]])), ["p2", "p4"]);
    assert_eq!(found(&store, &tokens(&[&[B]])), ["p1"]);
    assert!(found(&store, &tokens(&[&[C]])).is_empty());
    // Nothing stale is left behind: A for p2 and p4's new row, B for p1.
    let mut pairs = crate::common::token_pairs(&crate::common::db_path(&dir));
    pairs.sort();
    let tokens_only: Vec<Token> = pairs.iter().map(|p| p.0).collect();
    assert_eq!(tokens_only, [tok(A), tok(A), tok(B)]);
}

/// A rare token ANDed with a common one is answered by probing the common token's postings
/// rather than decoding them all; both ways must find exactly the rows that carry both, also
/// after updates moved rows out of postings and deletions removed them.
#[test]
fn rare_and_common_tokens_find_exactly_the_rows_carrying_both() {
    let (_dir, store) = open_store();
    const COMMON: u8 = 1;
    const RARE: u8 = 2;
    const OTHER: u8 = 3;
    // 300 commits of 3 patients each: every patient carries COMMON except every 7th, every
    // 97th carries RARE, every 2nd OTHER. COMMON and OTHER have 300 postings each, RARE about
    // ten rows, so ten candidates probe the big clauses (10 x 8 < 300) instead of decoding.
    let tokens_of = |n: usize| {
        let mut t = Vec::new();
        if !n.is_multiple_of(7) {
            t.push(tok(COMMON));
        }
        if n.is_multiple_of(97) {
            t.push(tok(RARE));
        }
        if n.is_multiple_of(2) {
            t.push(tok(OTHER));
        }
        t
    };
    let mut current: Vec<Option<Vec<Token>>> = Vec::new();
    for commit in 0..300 {
        let batch: Vec<_> = (0..3)
            .map(|k| {
                let n = commit * 3 + k;
                create("Patient", &format!("p{n}"), n as i64, &tokens_of(n))
            })
            .collect();
        store.write(&batch).unwrap();
        current.extend((0..3).map(|k| Some(tokens_of(commit * 3 + k))));
    }
    // Some rare rows lose COMMON and OTHER in an update, one is deleted.
    for n in [97, 291] {
        store
            .write(&[update("Patient", &format!("p{n}"), 2, 10_000, &[tok(RARE)])])
            .unwrap();
        current[n] = Some(vec![tok(RARE)]);
    }
    store
        .write(&[delete("Patient", "p194", 2, 10_000)])
        .unwrap();
    current[194] = None;
    let expect = |groups: &[&[u8]]| -> Vec<String> {
        let mut hits: Vec<(i64, String)> = Vec::new();
        for (n, t) in current.iter().enumerate() {
            let Some(t) = t else { continue };
            if groups
                .iter()
                .all(|g| g.iter().any(|&x| t.contains(&tok(x))))
            {
                // Updated rows are newer rows: they come after every first version.
                let order = if [97, 291].contains(&n) {
                    1_000 + n as i64
                } else {
                    n as i64
                };
                hits.push((order, format!("p{n}")));
            }
        }
        hits.sort();
        hits.into_iter().map(|(_, id)| id).collect()
    };
    for groups in [
        &[&[RARE][..], &[COMMON][..]][..],
        &[&[COMMON][..], &[RARE][..]][..],
        &[&[RARE][..], &[COMMON, OTHER][..]][..],
        &[&[RARE][..], &[OTHER][..], &[COMMON][..]][..],
        &[&[COMMON][..], &[OTHER][..]][..],
    ] {
        let want = expect(groups);
        assert!(!want.is_empty(), "{groups:?} should match something");
        assert_eq!(found(&store, &tokens(groups)), want, "{groups:?}");
    }
}

/// Postings live in the posting log for the newest commits and in the blind index after a
/// merge. A random workload of creates, updates and deletes is run against stores that merge
/// after every commit, every third commit and never; after every step each store answers
/// every one- and two-clause token search exactly as a model of the current rows does.
#[test]
fn searches_agree_with_a_model_however_postings_are_split_between_log_and_index() {
    let stores: Vec<(TempDir, SqliteStore)> = [1usize, 3, 100_000]
        .iter()
        .map(|&every| {
            let (dir, store) = open_store();
            store.set_posting_merge_every(every);
            (dir, store)
        })
        .collect();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // Model: id -> (current version, tokens); None once deleted.
    let mut model: Vec<Option<(i64, Vec<u8>)>> = Vec::new();
    let mut order: Vec<usize> = Vec::new(); // ids by the seq of their current version
    for step in 0..120 {
        let mut batch = Vec::new();
        let mut touched = Vec::new();
        for _ in 0..1 + next(4) {
            let tokens: Vec<u8> = (1..=5u8).filter(|_| next(3) == 0).collect();
            let toks: Vec<Token> = tokens.iter().map(|&t| tok(t)).collect();
            let live: Vec<usize> = (0..model.len())
                .filter(|&i| model[i].is_some() && !touched.contains(&i))
                .collect();
            let pick = if live.is_empty() { 0 } else { next(10) };
            if pick < 6 || live.is_empty() {
                let id = model.len();
                batch.push(create("Patient", &format!("p{id}"), step, &toks));
                model.push(Some((1, tokens)));
                touched.push(id);
            } else {
                let id = live[next(live.len() as u64) as usize];
                let Some((version, _)) = model[id].clone() else {
                    unreachable!()
                };
                if pick < 9 {
                    batch.push(update(
                        "Patient",
                        &format!("p{id}"),
                        version + 1,
                        step,
                        &toks,
                    ));
                    model[id] = Some((version + 1, tokens));
                } else {
                    batch.push(delete("Patient", &format!("p{id}"), version + 1, step));
                    model[id] = None;
                }
                touched.push(id);
            }
        }
        for (_, store) in &stores {
            store.write(&batch).unwrap();
        }
        order.retain(|id| !touched.contains(id));
        order.extend(touched.iter().filter(|&&id| model[id].is_some()));
        // The whole type, listed from its type posting.
        let everyone: Vec<String> = order.iter().map(|id| format!("p{id}")).collect();
        for (_, store) in &stores {
            assert_eq!(
                found(store, &patients()),
                everyone,
                "step {step}, whole type"
            );
        }
        for a in 1..=5u8 {
            for b in 0..=5u8 {
                let groups: Vec<&[u8]> = if b == 0 {
                    vec![std::slice::from_ref(&a)]
                } else {
                    vec![std::slice::from_ref(&a), std::slice::from_ref(&b)]
                };
                let want: Vec<String> = order
                    .iter()
                    .filter(|&&id| {
                        let tokens = &model[id].as_ref().unwrap().1;
                        groups.iter().all(|g| g.iter().any(|t| tokens.contains(t)))
                    })
                    .map(|id| format!("p{id}"))
                    .collect();
                for (_, store) in &stores {
                    assert_eq!(
                        found(store, &tokens(&groups)),
                        want,
                        "step {step}, {groups:?}"
                    );
                }
            }
        }
    }
    // Nothing stale is left anywhere: the stores hold exactly the model's current postings.
    let live: usize = model.iter().flatten().map(|(_, tokens)| tokens.len()).sum();
    for (dir, _) in &stores {
        let path = crate::common::db_path(dir);
        assert_eq!(crate::common::token_pairs(&path).len(), live);
        assert_eq!(
            crate::common::type_postings(&path, "Patient"),
            crate::common::live_seqs(&path, "Patient")
        );
    }
}

/// One commit retiring many versions of one earlier commit rewrites that commit's log row
/// once, and leaves exactly the new postings.
#[test]
fn a_commit_updating_a_whole_earlier_commit_leaves_only_the_new_postings() {
    let (dir, store) = open_store();
    let created: Vec<_> = (0..50)
        .map(|n| create("Patient", &format!("p{n}"), n, &[tok(A), tok(C)]))
        .collect();
    store.write(&created).unwrap();
    let updated: Vec<_> = (0..50)
        .map(|n| update("Patient", &format!("p{n}"), 2, 100 + n, &[tok(B)]))
        .collect();
    store.write(&updated).unwrap();
    assert!(found(&store, &tokens(&[&[A]])).is_empty());
    assert!(found(&store, &tokens(&[&[C]])).is_empty());
    assert_eq!(found(&store, &tokens(&[&[B]])).len(), 50);
    let pairs = crate::common::token_pairs(&crate::common::db_path(&dir));
    assert_eq!(pairs.len(), 50);
    assert!(pairs.iter().all(|(t, _)| *t == tok(B)));
}

/// A whole-type listing takes its total and page from the type's posting, and checks each
/// row it reads: a posting edited to name a retired version, or another type's, is an error,
/// not a wrong answer.
#[test]
fn a_type_posting_naming_the_wrong_rows_is_refused() {
    use medvault_store::{posting, StoreError};

    for stale in ["Patient", "Observation"] {
        let (dir, store) = open_store();
        store
            .write(&[
                create("Patient", "p1", 1, &[]),
                create("Patient", "p2", 2, &[]),
                create("Observation", "o1", 3, &[]),
            ])
            .unwrap();
        store.write(&[delete("Patient", "p2", 2, 4)]).unwrap();
        assert_eq!(
            ids(&store.search(&patients(), 0, 10).unwrap().records),
            ["p1"]
        );
        // Post p2's retired version (or the Observation) under Patient, in a new log row.
        let path = crate::common::db_path(&dir);
        let conn = crate::common::raw(&path);
        let seq: i64 = conn
            .query_row(
                "SELECT seq FROM resource_version WHERE rtype = ? ORDER BY seq LIMIT 1 OFFSET ?",
                rusqlite::params![stale, if stale == "Patient" { 1 } else { 0 }],
                |r| r.get(0),
            )
            .unwrap();
        let mut batch = posting::LogBatch::new();
        batch.insert(posting::type_token("Patient"), vec![seq]);
        conn.execute(
            "INSERT INTO posting_log (batch, rev, data) VALUES (?, 0, ?)",
            rusqlite::params![1_000_000, posting::encode_batch(&batch)],
        )
        .unwrap();
        drop(conn);
        assert!(
            matches!(
                store.search(&patients(), 0, 10),
                Err(StoreError::Corrupt("type posting"))
            ),
            "{stale}"
        );
    }
}

/// A merge refuses a posting log that repeats a (token, row) pair (rows cover disjoint
/// `seq` ranges, so only a corrupt or planted row can), and the commit that triggered it is
/// rolled back: nothing is merged and the new version is not stored.
#[test]
fn a_merge_refuses_a_log_that_repeats_a_posting() {
    use medvault_store::{posting, StoreError};

    let (dir, store) = open_store();
    store
        .write(&[create("Patient", "p1", 1, &[tok(A)])])
        .unwrap();
    let path = crate::common::db_path(&dir);
    let conn = crate::common::raw(&path);
    let seq: i64 = conn
        .query_row("SELECT seq FROM resource_version", [], |r| r.get(0))
        .unwrap();
    let mut batch = posting::LogBatch::new();
    batch.insert(tok(A), vec![seq]);
    conn.execute(
        "INSERT INTO posting_log (batch, rev, data) VALUES (?, 0, ?)",
        rusqlite::params![1_000_000, posting::encode_batch(&batch)],
    )
    .unwrap();
    drop(conn);
    store.set_posting_merge_every(1);
    assert!(matches!(
        store.write(&[create("Patient", "p2", 2, &[tok(A)])]),
        Err(StoreError::Corrupt("posting log"))
    ));
    let conn = crate::common::raw(&path);
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM resource_version"), 1);
    assert_eq!(count("SELECT count(*) FROM search_posting"), 0);
    assert_eq!(count("SELECT count(*) FROM posting_log"), 2);
}

/// Tokens whose bytes are not all equal keep their identity through a merge (the merge
/// sorts them as integers and writes them back): each is found again, with its own rows,
/// from the log and after the merge.
#[test]
fn asymmetric_tokens_survive_a_merge() {
    let (_dir, store) = open_store();
    let up: Token = std::array::from_fn(|i| i as u8);
    let down: Token = std::array::from_fn(|i| 15 - i as u8);
    let query = |t: Token| StoreQuery {
        all_of: vec![vec![t]],
        ..patients()
    };
    let ids_of = |t: Token| -> Vec<String> {
        let mut ids: Vec<String> = store
            .search_all(&query(t))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    };
    store.set_posting_merge_every(3);
    store.write(&[create("Patient", "a", 1, &[up])]).unwrap();
    store.write(&[create("Patient", "b", 2, &[down])]).unwrap();
    assert_eq!(
        (ids_of(up), ids_of(down)),
        (vec!["a".into()], vec!["b".into()])
    );
    // The third commit merges all three log rows into the index.
    store
        .write(&[create("Patient", "c", 3, &[up, down])])
        .unwrap();
    let path = crate::common::db_path(&_dir);
    let logged: i64 = crate::common::raw(&path)
        .query_row("SELECT count(*) FROM posting_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logged, 0, "merged");
    assert_eq!(ids_of(up), ["a", "c"]);
    assert_eq!(ids_of(down), ["b", "c"]);
}
