"""The ground floor of files: image files found in a folder, DICOM files read and windowed,
the pixel budget every decoded image is held to, and a prepared dataset's report read back.
Both the preparation (`medft.prepare`) and the inference engine (`medft.inference`) stand
on it."""
