"""Tag sets of multi-label datasets (app.datasets.tagsets): one canonical string per set, from
a list or a "|"-joined string, and whole Arrow columns of an import the same way."""

from __future__ import annotations

import pyarrow as pa
import pytest

from app.datasets import tagsets

CLASSES = ["cat", "dog", "bird"]


@pytest.mark.parametrize(("value", "canonical"), [
    (["dog", "cat"], "cat|dog"),
    (["bird", "bird", " dog "], "dog|bird"),
    ([], ""),
    ("", ""),
    ("  ", ""),
    ("bird|cat", "cat|bird"),
    ("cat", "cat"),
    (("bird",), "bird"),
])
def test_parse_orders_by_class_and_drops_repeats(value, canonical):
    assert tagsets.parse(value, CLASSES) == canonical
    assert tagsets.to_string(tagsets.to_list(canonical), CLASSES) == canonical


@pytest.mark.parametrize(("value", "message"), [
    (["cat", "fish"], "unknown class 'fish'; the dataset's classes are ['cat', 'dog', 'bird']"),
    ("cat|Dog", "unknown class 'Dog'"),
    ("cat||dog", "a blank class name"),
    (["cat", ""], "a blank class name"),
    ([1], "class names are strings"),
    (None, "not null"),
    (5, "not int"),
])
def test_parse_refuses_what_is_not_a_set_of_the_classes(value, message):
    with pytest.raises(tagsets.TagSetError, match=message.replace("[", r"\[").replace("]", r"\]")):
        tagsets.parse(value, CLASSES)


def test_parse_refuses_a_set_too_long_to_store():
    classes = [f"{'x' * 60}{i}" for i in range(5)]
    with pytest.raises(tagsets.TagSetError, match="at most 200"):
        tagsets.parse(classes, classes)


def test_to_list_and_canonical():
    assert tagsets.to_list(None) is None
    assert tagsets.to_list("") == []
    assert tagsets.to_list("cat|bird") == ["cat", "bird"]
    assert tagsets.is_canonical("cat|bird", CLASSES) and tagsets.is_canonical("", CLASSES)
    assert tagsets.is_canonical(None, CLASSES)
    assert not tagsets.is_canonical("bird|cat", CLASSES) and not tagsets.is_canonical("fish", CLASSES)


def test_class_names_with_the_separator_are_named():
    assert tagsets.class_name_problems(["a", "b|c"]) == [
        "class name 'b|c' contains '|', which separates the classes of a multi-label sample"]
    assert tagsets.class_name_problems(["a", "b"]) == []


def test_a_list_column_is_canonical_by_row_with_problems_named():
    col = pa.array([["dog", "cat"], [], None, ["fish", "cat", "eel"], ["bird", "bird"], [None]])
    parsed = tagsets.parse_column(col, CLASSES)
    assert parsed.labels.to_pylist() == ["cat|dog", "", None, "cat", "bird", ""]
    assert not parsed.blank.any()
    assert parsed.problems == {3: "unknown class 'fish'; the dataset's classes are ['cat', 'dog', 'bird']",
                               5: "a class name is null; a tag set is a list of class names"}


def test_a_text_column_splits_on_the_separator_and_marks_blank_cells():
    col = pa.chunked_array([["dog|cat", "", None], [" bird ", "cat|"]])
    parsed = tagsets.parse_column(col, CLASSES)
    assert parsed.labels.to_pylist() == ["cat|dog", None, None, "bird", "cat"]
    assert parsed.blank.tolist() == [False, True, True, False, False]
    assert parsed.problems == {4: "a blank class name in the tag set"}


def test_a_dataset_without_classes_takes_the_files_sorted():
    parsed = tagsets.parse_column(pa.array([["zebra", "ant"], ["b|c"], ["mole"]]), [])
    assert parsed.classes == ["ant", "mole", "zebra"]
    assert parsed.labels.to_pylist()[0] == "ant|zebra"
    assert parsed.problems == {1: "class name 'b|c' contains '|', which separates the classes of a multi-label sample"}


def test_a_column_of_numbers_holds_no_tag_sets():
    with pytest.raises(tagsets.TagSetError, match="column 'label' has type int64"):
        tagsets.parse_column(pa.array([1, 2]), CLASSES)


def test_lists_from_strings_inverts_the_canonical_form():
    arr = pa.array(["cat|bird", "", None, "dog"])
    assert tagsets.lists_from_strings(arr).to_pylist() == [["cat", "bird"], [], None, ["dog"]]
    assert tagsets.lists_from_strings(arr.slice(1)).to_pylist() == [[], None, ["dog"]]
