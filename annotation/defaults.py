"""The default HAM10000 taxonomy (Tschandl et al. 2018 diagnostic categories)."""

HAM10000_TAXONOMY = {
    "name": "HAM10000",
    "description": "Seven diagnostic categories of HAM10000 in three meta-classes.",
    "meta_classes": {
        "melanocytic": ["nv", "mel"],
        "keratinocytic": ["akiec", "bcc", "bkl"],
        "dermal_vascular": ["df", "vasc"],
    },
    "malignancy": {"nv": 1, "bkl": 1, "df": 1, "vasc": 1, "akiec": 2, "bcc": 2, "mel": 3},
    "display_names": {
        "melanocytic": "Melanocytic",
        "keratinocytic": "Keratinocytic",
        "dermal_vascular": "Dermal / vascular",
        "nv": "Melanocytic naevus",
        "mel": "Melanoma",
        "akiec": "Actinic keratosis / Bowen's disease",
        "bcc": "Basal cell carcinoma",
        "bkl": "Benign keratosis",
        "df": "Dermatofibroma",
        "vasc": "Vascular lesion",
    },
}
