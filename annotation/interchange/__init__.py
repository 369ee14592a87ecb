"""Import and export: lesion boxes in labelImg / Pascal VOC XML, COCO JSON and CSV
(report, xmltree, matching, store, voc, coco, export, tasks), and labelled photo
folders as cases (dataset).

Box coordinates are written as they are stored: integer pixel edges of the original photo,
xmin/ymin = x0/y0 and xmax/ymax = x1/y1, exactly what labelImg reads and writes; COCO
bbox = [x0, y0, x1 - x0, y1 - y0]. A label is a sub-class code or, for a box whose
annotator was unsure at the fine level, a meta-class code. Extra fields keep a round
trip lossless: VOC <difficult>/<truncated> and <derm_excluded>; COCO "attributes"
{difficult, truncated} and image "derm_excluded".

Photos are matched by file name to Photo.original_name (or a name exported as
"<stem>-p<photo id><ext>" when two photos share a name). Problems are reported per file
and line; the rest is imported. Re-importing replaces that annotator's boxes on a photo.
"""
