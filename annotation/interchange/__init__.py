"""Import and export.

Lesion boxes: voc.py (labelImg / Pascal VOC XML in), coco.py (COCO JSON in), export.py
(VOC, COCO and CSV out), jobs.py (large imports on the long queue), with their shared parts
report.py, xmltree.py, matching.py, store.py and limits.py (caps on one import).
Labelled photo folders as cases (manage.py import_dataset): dataset_rows.py checks every
row, dataset.py writes them all or none.

Box coordinates are written as they are stored: pixel edges of the original photo with the
sub-pixel values an imported file gave (annotation/pixels.py), a whole pixel written as an
integer; xmin/ymin = x0/y0 and xmax/ymax = x1/y1, what labelImg reads and writes; COCO
bbox = [x0, y0, x1 - x0, y1 - y0]; YOLO normalised from the stored values. A label is a sub-class code or, for a box whose
annotator was unsure at the fine level, a meta-class code. Extra fields keep a round
trip lossless: VOC <difficult>/<truncated> and <derm_excluded>; COCO "attributes"
{difficult, truncated} and image "derm_excluded".

Photos are matched by file name to Photo.original_name (or a name exported as
"<stem>-p<photo id><ext>" when two photos share a name). Problems are reported per file
and line; the rest is imported. Re-importing replaces that annotator's boxes on a photo.
"""
