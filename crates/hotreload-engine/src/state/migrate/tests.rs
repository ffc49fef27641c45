use super::*;
use crate::layout::testing::{F64, I8, I32, I64, ints, layout, read_ints};

fn f(name: &str, offset: usize, scalar: Scalar) -> Field {
    Field::new(name, offset, scalar, 1)
}

/// Runs `plan` on `old_bytes` into a zeroed block of the new size.
fn migrate(plan: &Plan, old_bytes: &[u8]) -> Result<(Vec<u8>, Applied), Unfit> {
    let mut new = vec![0u8; plan.new_size];
    let applied = plan.apply(old_bytes, &mut new)?;
    Ok((new, applied))
}

#[test]
fn adds_keeps_drops_reorders_and_widens() {
    let old = layout(
        12,
        vec![f("score", 0, I32), f("bonus", 4, I32), f("level", 8, I8)],
    );
    let new = layout(
        24,
        vec![f("lives", 0, I32), f("score", 8, I64), f("level", 16, I32)],
    );
    let plan = plan(&old, &new, &[]).expect("compatible");
    assert_eq!(plan.added, vec!["lives"]);
    assert_eq!(plan.dropped, vec!["bonus"]);
    assert_eq!(
        plan.summary(),
        "+lives -bonus ~score (int32 → int64) ~level (int8 → int32)"
    );
    let mut old_bytes = vec![0u8; 12];
    old_bytes[..4].copy_from_slice(&(-7i32).to_ne_bytes());
    old_bytes[4..8].copy_from_slice(&99i32.to_ne_bytes());
    old_bytes[8] = (-3i8) as u8;
    let (new_bytes, applied) = migrate(&plan, &old_bytes).expect("fits");
    assert_eq!(applied, Applied::default());
    assert_eq!(read_ints(&new_bytes[..4]), [0], "new field zero");
    assert_eq!(
        i64::from_ne_bytes(new_bytes[8..16].try_into().expect("8")),
        -7,
        "sign kept"
    );
    assert_eq!(read_ints(&new_bytes[16..20]), [-3]);
}

#[test]
fn int_to_double_and_reorder_only() {
    let old = layout(16, vec![f("a", 0, I32), f("b", 8, F64)]);
    let new = layout(16, vec![f("b", 0, F64), f("a", 8, F64)]);
    let plan = plan(&old, &new, &[]).expect("compatible");
    let mut old_bytes = vec![0u8; 16];
    old_bytes[..4].copy_from_slice(&5i32.to_ne_bytes());
    old_bytes[8..].copy_from_slice(&2.5f64.to_ne_bytes());
    let (new_bytes, _) = migrate(&plan, &old_bytes).expect("fits");
    assert_eq!(
        f64::from_ne_bytes(new_bytes[..8].try_into().expect("8")),
        2.5
    );
    assert_eq!(
        f64::from_ne_bytes(new_bytes[8..].try_into().expect("8")),
        5.0
    );
    let same = super::plan(&old, &old, &[]).expect("same");
    assert!(same.is_identity());
    let reordered = layout(16, vec![f("b", 0, F64), f("a", 8, I32)]);
    assert_eq!(
        super::plan(&old, &reordered, &[])
            .expect("compatible")
            .summary(),
        "reordered b, a"
    );
}

/// A glider in `int grid[4][5]`: rows must stay rows when each gains a
/// column.
#[test]
fn a_wider_grid_keeps_every_row_intact() {
    let old = layout(80, vec![Field::array("grid", 0, I32, vec![4, 5])]);
    let new = layout(96, vec![Field::array("grid", 0, I32, vec![4, 6])]);
    let glider = [
        [0, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
    ];
    let flat: Vec<i32> = glider.iter().flatten().copied().collect();
    let plan = plan(&old, &new, &[]).expect("compatible");
    assert_eq!(plan.summary(), "+grid[*][5]");
    let (new_bytes, _) = migrate(&plan, &ints(&flat)).expect("fits");
    let rows: Vec<Vec<i32>> = read_ints(&new_bytes)
        .chunks(6)
        .map(<[i32]>::to_vec)
        .collect();
    for (row, want) in rows.iter().zip(&glider) {
        assert_eq!(&row[..5], want);
        assert_eq!(row[5], 0, "the new column starts at zero");
    }
}

#[test]
fn elements_outside_the_shared_box_are_named_like_fields() {
    let old = layout(16, vec![Field::new("b", 0, I32, 4)]);
    let new = layout(8, vec![Field::new("b", 0, I32, 2)]);
    let plan = super::plan(&old, &new, &[]).expect("compatible");
    assert_eq!(plan.dropped, vec!["b[2..4]"]);
    assert_eq!(plan.summary(), "-b[2..4]");
    let (new_bytes, _) = migrate(&plan, &ints(&[1, 2, 3, 4])).expect("fits");
    assert_eq!(read_ints(&new_bytes), [1, 2]);

    let old = layout(24, vec![Field::array("g", 0, I32, vec![2, 3])]);
    let new = layout(36, vec![Field::array("g", 0, I32, vec![3, 3])]);
    assert_eq!(
        super::plan(&old, &new, &[]).expect("compatible").summary(),
        "+g[2][*]"
    );
    let new = layout(16, vec![Field::array("g", 0, I32, vec![1, 4])]);
    let plan = super::plan(&old, &new, &[]).expect("compatible");
    assert_eq!(plan.summary(), "+g[*][3] -g[1][*]");
    let (new_bytes, _) = migrate(&plan, &ints(&[0, 1, 2, 10, 11, 12])).expect("fits");
    assert_eq!(read_ints(&new_bytes), [0, 1, 2, 0]);

    let scalar = layout(4, vec![f("a", 0, I32)]);
    let array = layout(16, vec![Field::new("a", 0, I32, 4)]);
    let plan = super::plan(&scalar, &array, &[]).expect("compatible");
    assert_eq!(plan.summary(), "+a[1..4]");
    let (new_bytes, _) = migrate(&plan, &ints(&[9])).expect("fits");
    assert_eq!(read_ints(&new_bytes), [9, 0, 0, 0]);
    assert_eq!(
        super::plan(&array, &scalar, &[])
            .expect("compatible")
            .summary(),
        "-a[1..4]"
    );
}

#[test]
fn a_new_number_of_dimensions_keeps_the_elements_only_when_their_count_stays() {
    let flat = layout(24, vec![Field::new("g", 0, I32, 6)]);
    let grid = layout(24, vec![Field::array("g", 0, I32, vec![2, 3])]);
    let plan = plan(&flat, &grid, &[]).expect("the same six elements");
    assert_eq!(plan.summary(), "~g ([6] → [2][3])");
    let (new_bytes, _) = migrate(&plan, &ints(&[1, 2, 3, 4, 5, 6])).expect("fits");
    assert_eq!(read_ints(&new_bytes), [1, 2, 3, 4, 5, 6]);
    let bigger = layout(32, vec![Field::array("g", 0, I32, vec![2, 4])]);
    let err = super::plan(&flat, &bigger, &[]).expect_err("nowhere to go");
    assert_eq!(
        err.to_string(),
        "field g: expected it to stay int32[6] or become a type that holds its values, found \
         int32[2][4] (1 dimensions became 2 and the element count changed from 6 to 8, so no \
         element has a place to go); the new version is refused; to start g at zero in it \
         instead, pass --reset-field g"
    );
}

#[test]
fn one_change_to_many_struct_elements_is_one_entry() {
    let mut old_fields = Vec::new();
    let mut new_fields = Vec::new();
    for r in 0..5 {
        for c in 0..20 {
            let at = (r * 20 + c) * 8;
            old_fields.push(f(&format!("brick[{r}][{c}].x"), at, I32));
            new_fields.push(f(&format!("brick[{r}][{c}].x"), at, I32));
            new_fields.push(f(&format!("brick[{r}][{c}].hits"), at + 4, I32));
        }
    }
    let plan = plan(&layout(800, old_fields), &layout(800, new_fields), &[]).expect("compatible");
    assert_eq!(plan.added.len(), 100);
    assert_eq!(plan.summary(), "+brick[*][*].hits (100)");
}

#[test]
fn narrowing_checks_every_value_and_names_the_first_that_does_not_fit() {
    let wide = layout(8, vec![f("bounces", 0, I64)]);
    let narrow = layout(4, vec![f("bounces", 0, I32)]);
    let plan = plan(&wide, &narrow, &[]).expect("a checked narrowing");
    assert_eq!(
        plan.summary(),
        "~bounces (int64 → int32, every value checked)"
    );
    let (new_bytes, _) = migrate(&plan, &365i64.to_ne_bytes()).expect("365 fits");
    assert_eq!(read_ints(&new_bytes), [365]);
    let unfit = migrate(&plan, &3_000_000_000i64.to_ne_bytes()).expect_err("too big");
    assert_eq!(
        unfit.to_string(),
        "field bounces: value 3000000000 does not fit int32; the new version is refused; to \
         start bounces at zero in it instead, pass --reset-field bounces"
    );
    // An array names the element.
    let old = layout(24, vec![Field::array("g", 0, I64, vec![3])]);
    let new = layout(3, vec![Field::array("g", 0, I8, vec![3])]);
    let plan = super::plan(&old, &new, &[]).expect("a checked narrowing");
    let values: Vec<u8> = [1i64, -128, 300]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let unfit = migrate(&plan, &values).expect_err("300 is no int8");
    assert_eq!(
        (unfit.element.as_str(), unfit.value.as_str()),
        ("g[2]", "300")
    );
}

#[test]
fn reset_field_starts_only_that_field_at_zero_instead_of_refusing() {
    let old = layout(16, vec![f("bounces", 0, I64), f("score", 8, I32)]);
    let new = layout(8, vec![f("bounces", 0, I32), f("score", 4, I32)]);
    let reset = vec!["bounces".to_owned()];
    let plan = plan(&old, &new, &reset).expect("compatible");
    let mut old_bytes = vec![0u8; 16];
    old_bytes[..8].copy_from_slice(&3_000_000_000i64.to_ne_bytes());
    old_bytes[8..12].copy_from_slice(&42i32.to_ne_bytes());
    let (new_bytes, applied) = migrate(&plan, &old_bytes).expect("reset, not refused");
    assert_eq!(read_ints(&new_bytes), [0, 42]);
    assert_eq!(
        plan.summary(),
        "~bounces (int64 → int32, every value checked)"
    );
    assert_eq!(
        plan.summary_after(&applied),
        "reset bounces (value 3000000000 does not fit int32)"
    );
    assert_eq!(
        with_resets(
            format!("{}; state version 1 → 2", plan.summary()),
            &plan,
            &applied
        ),
        "reset bounces (value 3000000000 does not fit int32); state version 1 → 2"
    );
    // A value that fits is carried even though the field is named.
    old_bytes[..8].copy_from_slice(&7i64.to_ne_bytes());
    let (new_bytes, applied) = migrate(&plan, &old_bytes).expect("fits");
    assert_eq!(read_ints(&new_bytes), [7, 42]);
    assert_eq!(applied, Applied::default());

    // A type that can never be carried is reset by the plan.
    let old = layout(16, vec![f("time", 0, F64), f("hp", 8, I32)]);
    let new = layout(8, vec![f("time", 0, I32), f("hp", 4, I32)]);
    let err = super::plan(&old, &new, &[]).expect_err("double to int");
    assert!(err.to_string().contains("--reset-field time"), "{err}");
    let plan = super::plan(&old, &new, &["t*".to_owned()]).expect("reset");
    assert_eq!(
        plan.summary(),
        "reset time (double → int32: a float's fractions would be lost)"
    );
    let mut old_bytes = vec![0u8; 16];
    old_bytes[..8].copy_from_slice(&1.5f64.to_ne_bytes());
    old_bytes[8..12].copy_from_slice(&5i32.to_ne_bytes());
    let (new_bytes, _) = migrate(&plan, &old_bytes).expect("fits");
    assert_eq!(read_ints(&new_bytes), [0, 5]);
}

#[test]
fn per_element_hints_offer_a_pattern() {
    let old = layout(8, vec![f("enemies[1].at", 0, Scalar::Pointer)]);
    let new = layout(8, vec![f("enemies[1].at", 0, I64)]);
    let err = plan(&old, &new, &[]).expect_err("pointer to number");
    assert!(
        err.to_string().ends_with(
            "to start enemies[1].at at zero in it instead, pass --reset-field 'enemies[*].at'"
        ),
        "{err}"
    );
    assert!(plan(&old, &new, &["enemies[*].at".into()]).is_ok());
}

#[test]
fn decide_keeps_migrates_or_refuses() {
    let a = layout(4, vec![f("score", 0, I32)]);
    let b = layout(8, vec![f("score", 0, I32), f("lives", 4, I32)]);
    fn side(layout: Option<&Layout>, size: usize, version: u32, has_hook: bool) -> Side<'_> {
        Side {
            size,
            version,
            layout,
            has_hook,
        }
    }
    let decide = |o, n| super::decide(o, n, &[]);
    assert_eq!(
        decide(side(Some(&a), 4, 0, false), side(Some(&a), 4, 0, false)),
        Ok(Decision::Keep)
    );
    assert_eq!(
        decide(side(None, 4, 0, false), side(None, 4, 0, false)),
        Ok(Decision::Keep)
    );
    match decide(side(Some(&a), 4, 0, false), side(Some(&b), 8, 0, false)) {
        Ok(Decision::Migrate {
            plan: Some(_),
            summary,
        }) => assert_eq!(summary, "+lives"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decide(side(None, 4, 0, false), side(None, 8, 0, true)),
        Ok(Decision::Migrate { plan: None, .. })
    ));
    let refused =
        decide(side(None, 4, 0, false), side(Some(&b), 8, 0, false)).expect_err("refused");
    assert!(
        refused.contains("4 to 8 bytes")
            && refused.contains("running version's layout is not known"),
        "{refused}"
    );
    let version = decide(side(None, 4, 1, false), side(None, 4, 2, false)).expect_err("refused");
    assert!(
        version.contains("state_version changed from 1 to 2"),
        "{version}"
    );
}

#[test]
fn a_lossy_type_is_refused_saying_what_happens_and_how_to_reset_it() {
    let old = layout(8, vec![f("time", 0, F64)]);
    let new = layout(4, vec![f("time", 0, I32)]);
    let err = plan(&old, &new, &[]).expect_err("lossy");
    assert_eq!(
        err.to_string(),
        "field time: expected it to stay double or become a type that holds its values, found \
         int32 (a float's fractions would be lost); the new version is refused; to start time at \
         zero in it instead, pass --reset-field time"
    );
}
