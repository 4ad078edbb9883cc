"""One inference engine: load a saved model, read images as `pipeline()` does, score batches.

`medft evaluate`, `medft predict`, `medft explain`, `medft serve` and `medft export` all go
through here. A saved model runs in PyTorch; a `medft export`ed model.onnx runs in
onnxruntime, with the preprocessing its preprocessor.json describes. Worker
processes (a torch `DataLoader`) decode each image as `pipeline()` does
(transformers' `load_image`: EXIF orientation applied, RGB) and preprocess it with
the model's own image processor; the model scores whole batches, on the GPU when
there is one. DICOM files are read by `medft.formats` with the settings the model
folder records (``dicom.json``: window, bit depth, frames), as its training data
was; `load_image` gives plain-transformers users the same image. An image that
cannot be read is reported with the reason, and the run goes on.

By job: `classifier` loads a saved model (`onnx_model` an exported one, with the
preprocessing `preprocessing` applies), `reading` reads images, `scoring` scores batches
(over the test-time views of `tta`), `inputs` collects what the command line names.
"""
