# Rich outputs of the kernel (imported by driver.py from /sandbox): the MIME bundle of an object,
# as IPython's display formatters make it. An object offers its representations through
# _repr_mimebundle_ and the _repr_<format>_ methods; a matplotlib Figure is rendered as PNG.
# text/plain is always there (repr). Written by hand rather than importing IPython: IPython is
# not in every environment, and the protocol is a handful of method names.

import base64
import json
import sys

# (MIME type, method) in IPython's order of preference.
REPR_METHODS = (
    ('text/html', '_repr_html_'),
    ('text/markdown', '_repr_markdown_'),
    ('text/latex', '_repr_latex_'),
    ('image/svg+xml', '_repr_svg_'),
    ('image/png', '_repr_png_'),
    ('image/jpeg', '_repr_jpeg_'),
    ('application/json', '_repr_json_'),
)
BINARY_TYPES = ('image/png', 'image/jpeg')


def _warn(what, exc):
    try:
        sys.stderr.write('display: %s failed: %s: %s\n' % (what, type(exc).__name__, exc))
    except Exception:
        pass


def _method(obj, name):
    # Like IPython: never a class's unbound method, only a callable found on an instance.
    if isinstance(obj, type):
        return None
    try:
        m = getattr(obj, name, None)
    except Exception:
        return None
    return m if callable(m) else None


def _normalise(mime, value):
    """The value as it travels in JSON, or None when it cannot."""
    if isinstance(value, tuple) and len(value) == 2:  # (data, metadata)
        value = value[0]
    if value is None:
        return None
    if mime in BINARY_TYPES:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return base64.b64encode(bytes(value)).decode('ascii')
        return value if isinstance(value, str) else None
    if mime == 'application/json':
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        try:
            # Strict JSON: NaN or Infinity would make a frame the service cannot parse.
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return None
        return value
    if isinstance(value, bytes):
        value = value.decode('utf-8', 'replace')
    return value if isinstance(value, str) else None


def _figure_png(obj):
    figure_module = sys.modules.get('matplotlib.figure')
    if figure_module is None or not isinstance(obj, figure_module.Figure):
        return None
    return figure_png(obj)


def figure_png(figure):
    """PNG bytes of a matplotlib figure."""
    import io
    buf = io.BytesIO()
    figure.savefig(buf, format='png')
    return buf.getvalue()


def mime_bundle(obj, plain):
    """{mime: value} for obj; `plain` makes its text/plain (the driver clips repr)."""
    data = {}
    bundle_method = _method(obj, '_repr_mimebundle_')
    if bundle_method is not None:
        try:
            got = bundle_method(include=None, exclude=None)
            if isinstance(got, tuple) and len(got) == 2:
                got = got[0]
            if isinstance(got, dict):
                for mime, value in got.items():
                    if isinstance(mime, str):
                        value = _normalise(mime, value)
                        if value is not None:
                            data[mime] = value
        except Exception as exc:
            _warn('_repr_mimebundle_', exc)
    for mime, name in REPR_METHODS:
        if mime in data:
            continue
        method = _method(obj, name)
        if method is None:
            continue
        try:
            value = _normalise(mime, method())
        except Exception as exc:
            _warn(name, exc)
            continue
        if value is not None:
            data[mime] = value
    if 'image/png' not in data:
        try:
            png = _figure_png(obj)
            if png is not None:
                data['image/png'] = base64.b64encode(png).decode('ascii')
        except Exception as exc:
            _warn('rendering the figure', exc)
    if 'text/plain' not in data:
        data['text/plain'] = plain(obj)
    return data


def raw_bundle(mapping):
    """display(..., raw=True): a MIME dict given as is, keeping only what can travel."""
    data = {}
    for mime, value in mapping.items():
        if isinstance(mime, str):
            value = _normalise(mime, value)
            if value is not None:
                data[mime] = value
    return data


def bundle_size(data):
    """Characters the bundle takes in the answer (what MAX_OUTPUT_CHARS bounds)."""
    size = 0
    for mime, value in data.items():
        size += len(mime) + (len(value) if isinstance(value, str) else len(json.dumps(value)))
    return size
