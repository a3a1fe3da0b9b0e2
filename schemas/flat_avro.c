/* Avro bodies of flat records in C: the same `read` and `write` as schemas/native_codec.py.
 *
 * native_codec.py (compiled by mypyc) still makes a Python call per double and per byte
 * appended; this file walks the same FlatPlan over raw memory, 4-6x faster on the hot path's
 * events. The rules are native_codec's, and tests/unit/test_native_codec.py holds both to
 * fastavro's bytes: strict reading (truncation, trailing bytes, out-of-range enum and union
 * indexes, negative lengths and varints past 64 bits raise ValueError), and writing that raises
 * TypeError, ValueError or KeyError on a value that does not fit (the codec then lets fastavro
 * write it or say why).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Field kinds: keep in step with schemas/native_codec.py. */
enum {
    STRING = 1,
    LONG = 2,
    DOUBLE = 3,
    BOOLEAN = 4,
    ENUM = 5,
    MAP_OF_DOUBLE = 6,
    MAP_OF_STRING = 7,
    ARRAY_OF_DOUBLE = 8,
    OPTIONAL = 16,
};

typedef struct {
    const unsigned char *data;
    Py_ssize_t pos;
    Py_ssize_t end;
} Reader;

/* The plan's lists, borrowed from the FlatPlan for one call (the caller holds the plan). */
typedef struct {
    PyObject *names;   /* list[str] */
    PyObject *kinds;   /* list[int] */
    PyObject *symbols; /* reading: list[list[str]]; writing: list[dict[str, int]] */
    Py_ssize_t count;
} Plan;

static PyObject *str_names, *str_kinds, *str_symbols, *str_symbol_index;

static int
plan_of(PyObject *plan, Plan *out, int writing)
{
    out->names = out->kinds = out->symbols = NULL;
    out->names = PyObject_GetAttr(plan, str_names);
    out->kinds = PyObject_GetAttr(plan, str_kinds);
    out->symbols = PyObject_GetAttr(plan, writing ? str_symbol_index : str_symbols);
    if (out->names == NULL || out->kinds == NULL || out->symbols == NULL)
        return -1;
    if (!PyList_Check(out->names) || !PyList_Check(out->kinds) || !PyList_Check(out->symbols)) {
        PyErr_SetString(PyExc_TypeError, "a FlatPlan holds lists");
        return -1;
    }
    out->count = PyList_GET_SIZE(out->names);
    if (PyList_GET_SIZE(out->kinds) != out->count || PyList_GET_SIZE(out->symbols) != out->count) {
        PyErr_SetString(PyExc_ValueError, "a FlatPlan's lists differ in length");
        return -1;
    }
    return 0;
}

static void
plan_release(Plan *plan)
{
    Py_XDECREF(plan->names);
    Py_XDECREF(plan->kinds);
    Py_XDECREF(plan->symbols);
}

/* -- reading ------------------------------------------------------------------------------- */

static int
read_long(Reader *r, int64_t *out)
{
    uint64_t value = 0;
    int shift = 0;
    unsigned char byte;
    do {
        if (r->pos >= r->end) {
            PyErr_SetString(PyExc_ValueError, "truncated varint");
            return -1;
        }
        byte = r->data[r->pos++];
        if (shift == 63 && byte > 1) {
            PyErr_SetString(PyExc_ValueError, "varint past 64 bits");
            return -1;
        }
        value |= (uint64_t)(byte & 0x7F) << shift;
        shift += 7;
    } while (byte & 0x80);
    *out = (int64_t)(value >> 1) ^ -(int64_t)(value & 1);
    return 0;
}

static PyObject *
read_string(Reader *r)
{
    int64_t size;
    if (read_long(r, &size) < 0)
        return NULL;
    if (size < 0 || size > r->end - r->pos) {
        PyErr_Format(PyExc_ValueError, "string of %lld bytes at %zd overruns the body",
                     (long long)size, r->pos);
        return NULL;
    }
    PyObject *text = PyUnicode_DecodeUTF8((const char *)r->data + r->pos, (Py_ssize_t)size,
                                          "strict");
    r->pos += (Py_ssize_t)size;
    return text;
}

static int
read_double(Reader *r, double *out)
{
    if (r->end - r->pos < 8) {
        PyErr_SetString(PyExc_ValueError, "truncated double");
        return -1;
    }
    *out = PyFloat_Unpack8((const char *)r->data + r->pos, 1);
    r->pos += 8;
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* The next block's item count; a negative count is followed by the block's byte size. */
static int
block_count(Reader *r, int64_t *count)
{
    int64_t size;
    if (read_long(r, count) < 0)
        return -1;
    if (*count < 0) {
        if (*count == INT64_MIN) {
            PyErr_SetString(PyExc_ValueError, "block count out of range");
            return -1;
        }
        *count = -*count;
        if (read_long(r, &size) < 0)
            return -1;
    }
    return 0;
}

/* One item of a map or array into `items`; -1 with an exception if the body does not hold it. */
typedef int (*ItemReader)(Reader *r, PyObject *items);

static int
read_map_entry(Reader *r, PyObject *items, int of_double)
{
    PyObject *key = read_string(r), *value = NULL;
    int set = -1;
    if (key != NULL) {
        double d;
        if (!of_double)
            value = read_string(r);
        else if (read_double(r, &d) == 0)
            value = PyFloat_FromDouble(d);
        if (value != NULL)
            set = PyDict_SetItem(items, key, value);
    }
    Py_XDECREF(key);
    Py_XDECREF(value);
    return set;
}

static int
read_double_entry(Reader *r, PyObject *items)
{
    return read_map_entry(r, items, 1);
}

static int
read_string_entry(Reader *r, PyObject *items)
{
    return read_map_entry(r, items, 0);
}

static int
read_double_item(Reader *r, PyObject *items)
{
    double d;
    PyObject *value;
    if (read_double(r, &d) < 0 || (value = PyFloat_FromDouble(d)) == NULL)
        return -1;
    int appended = PyList_Append(items, value);
    Py_DECREF(value);
    return appended;
}

/* `items` (a new dict or list) filled block by block by `read_item`; NULL if that fails. */
static PyObject *
read_blocks(Reader *r, PyObject *items, ItemReader read_item)
{
    int64_t count;
    if (items == NULL || block_count(r, &count) < 0)
        goto fail;
    while (count != 0) {
        for (int64_t i = 0; i < count; i++) {
            if (read_item(r, items) < 0)
                goto fail;
        }
        if (block_count(r, &count) < 0)
            goto fail;
    }
    return items;
fail:
    Py_XDECREF(items);
    return NULL;
}

static PyObject *
read_field(Reader *r, long kind, PyObject *name, PyObject *symbols)
{
    int64_t n;
    double d;
    switch (kind) {
    case STRING:
        return read_string(r);
    case LONG:
        return read_long(r, &n) < 0 ? NULL : PyLong_FromLongLong(n);
    case DOUBLE:
        return read_double(r, &d) < 0 ? NULL : PyFloat_FromDouble(d);
    case ENUM:
        if (read_long(r, &n) < 0)
            return NULL;
        if (!PyList_Check(symbols) || n < 0 || n >= PyList_GET_SIZE(symbols)) {
            PyErr_Format(PyExc_ValueError, "enum index %lld of %U is out of range",
                         (long long)n, name);
            return NULL;
        }
        return Py_NewRef(PyList_GET_ITEM(symbols, (Py_ssize_t)n));
    case MAP_OF_DOUBLE:
        return read_blocks(r, PyDict_New(), read_double_entry);
    case MAP_OF_STRING:
        return read_blocks(r, PyDict_New(), read_string_entry);
    case ARRAY_OF_DOUBLE:
        return read_blocks(r, PyList_New(0), read_double_item);
    case BOOLEAN:
        if (r->pos >= r->end) {
            PyErr_SetString(PyExc_ValueError, "truncated boolean");
            return NULL;
        }
        if (r->data[r->pos] > 1) {
            PyErr_Format(PyExc_ValueError, "boolean byte %d of %U", r->data[r->pos], name);
            return NULL;
        }
        return PyBool_FromLong(r->data[r->pos++]);
    default:
        PyErr_Format(PyExc_ValueError, "unknown field kind %ld of %U", kind, name);
        return NULL;
    }
}

/* A reader over args[0] (bytes) from args[1] (a position in it); -1 with an exception if not. */
static int
reader_of(PyObject *const *args, Reader *r)
{
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "reading takes bytes");
        return -1;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return -1;
    r->data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    r->pos = pos;
    r->end = PyBytes_GET_SIZE(args[0]);
    if (pos < 0 || pos > r->end) {
        PyErr_SetString(PyExc_ValueError, "position outside the data");
        return -1;
    }
    return 0;
}

/* The next value, field `i` of `plan` (None for a null union branch); sets `*kind` to the
 * field's kind without OPTIONAL. NULL with an exception if the body does not hold it. */
static PyObject *
read_value(Reader *r, const Plan *plan, Py_ssize_t i, long *kind)
{
    PyObject *name = PyList_GET_ITEM(plan->names, i);
    *kind = PyLong_AsLong(PyList_GET_ITEM(plan->kinds, i));
    if (*kind == -1 && PyErr_Occurred())
        return NULL;
    if (*kind >= OPTIONAL) {
        int64_t branch;
        if (read_long(r, &branch) < 0)
            return NULL;
        if (branch != 0 && branch != 1) {
            PyErr_Format(PyExc_ValueError, "union index %lld of %U is out of range",
                         (long long)branch, name);
            return NULL;
        }
        *kind -= OPTIONAL;
        if (branch == 0)
            return Py_NewRef(Py_None);
    }
    return read_field(r, *kind, name, PyList_GET_ITEM(plan->symbols, i));
}

static int
at_end(const Reader *r)
{
    if (r->pos == r->end)
        return 0;
    PyErr_Format(PyExc_ValueError, "%zd unexpected bytes after the record", r->end - r->pos);
    return -1;
}

/* read(data: bytes, pos: int, plan: FlatPlan) -> dict: the record whose body fills `data`
 * from `pos` to its end. */
static PyObject *
flat_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Reader r;
    Plan plan;
    PyObject *record = NULL;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "read(data, pos, plan)");
        return NULL;
    }
    if (reader_of(args, &r) < 0)
        return NULL;
    if (plan_of(args[2], &plan, 0) < 0)
        goto fail;
    record = PyDict_New();
    if (record == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < plan.count; i++) {
        long kind;
        PyObject *value = read_value(&r, &plan, i, &kind);
        if (value == NULL)
            goto fail;
        int set = PyDict_SetItem(record, PyList_GET_ITEM(plan.names, i), value);
        Py_DECREF(value);
        if (set < 0)
            goto fail;
    }
    if (at_end(&r) < 0)
        goto fail;
    plan_release(&plan);
    return record;
fail:
    plan_release(&plan);
    Py_XDECREF(record);
    return NULL;
}

/* read_object(data: bytes, pos: int, plan: FlatPlan, target: ObjectTarget) -> object: as
 * `read`, into a new instance of target.cls set slot by slot (no dict per event). Enum fields
 * become target.enums[i][symbol]; a symbol missing there raises KeyError (the caller then reads
 * the dict and says why). */
static PyObject *str_cls, *str_slots, *str_enums, *empty_tuple;

static PyObject *
flat_read_object(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    Reader r;
    Plan plan;
    PyObject *cls = NULL, *slots = NULL, *enums = NULL, *obj = NULL;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "read_object(data, pos, plan, target)");
        return NULL;
    }
    if (reader_of(args, &r) < 0)
        return NULL;
    if (plan_of(args[2], &plan, 0) < 0)
        goto fail;
    cls = PyObject_GetAttr(args[3], str_cls);
    slots = PyObject_GetAttr(args[3], str_slots);
    enums = PyObject_GetAttr(args[3], str_enums);
    if (cls == NULL || slots == NULL || enums == NULL)
        goto fail;
    if (!PyType_Check(cls) || !PyList_Check(slots) || !PyList_Check(enums) ||
        PyList_GET_SIZE(slots) != plan.count || PyList_GET_SIZE(enums) != plan.count) {
        PyErr_SetString(PyExc_TypeError, "an ObjectTarget holds a class and one slot per field");
        goto fail;
    }
    obj = PyBaseObject_Type.tp_new((PyTypeObject *)cls, empty_tuple, NULL);
    if (obj == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < plan.count; i++) {
        long kind;
        PyObject *value = read_value(&r, &plan, i, &kind);
        if (value == NULL)
            goto fail;
        PyObject *members = PyList_GET_ITEM(enums, i);
        if (kind == ENUM && value != Py_None && members != Py_None) {
            PyObject *member =
                PyDict_Check(members) ? PyDict_GetItemWithError(members, value) : NULL;
            if (member == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, value);
                Py_DECREF(value);
                goto fail;
            }
            Py_INCREF(member);
            Py_SETREF(value, member);
        }
        PyObject *slot = PyList_GET_ITEM(slots, i);
        if (slot == Py_None) { /* a field of the schema the class does not keep */
            Py_DECREF(value);
            continue;
        }
        descrsetfunc setter = Py_TYPE(slot)->tp_descr_set;
        int set = -1;
        if (setter == NULL)
            PyErr_Format(PyExc_TypeError, "the slot of %U cannot be set",
                         PyList_GET_ITEM(plan.names, i));
        else
            set = setter(slot, obj, value);
        Py_DECREF(value);
        if (set < 0)
            goto fail;
    }
    if (at_end(&r) < 0)
        goto fail;
    plan_release(&plan);
    Py_DECREF(cls);
    Py_DECREF(slots);
    Py_DECREF(enums);
    return obj;
fail:
    plan_release(&plan);
    Py_XDECREF(cls);
    Py_XDECREF(slots);
    Py_XDECREF(enums);
    Py_XDECREF(obj);
    return NULL;
}

/* -- writing ------------------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
    char inline_buffer[512];
} Writer;

static int
reserve(Writer *w, Py_ssize_t more)
{
    if (w->size + more <= w->capacity)
        return 0;
    Py_ssize_t capacity = w->capacity * 2;
    while (capacity < w->size + more)
        capacity *= 2;
    char *grown;
    if (w->data == w->inline_buffer) {
        grown = PyMem_Malloc((size_t)capacity);
        if (grown != NULL)
            memcpy(grown, w->data, (size_t)w->size);
    } else {
        grown = PyMem_Realloc(w->data, (size_t)capacity);
    }
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->data = grown;
    w->capacity = capacity;
    return 0;
}

static int
put_byte(Writer *w, unsigned char byte)
{
    if (reserve(w, 1) < 0)
        return -1;
    w->data[w->size++] = (char)byte;
    return 0;
}

static int
put_long(Writer *w, int64_t value)
{
    uint64_t encoded = ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
    if (reserve(w, 10) < 0)
        return -1;
    while (encoded > 0x7F) {
        w->data[w->size++] = (char)((encoded & 0x7F) | 0x80);
        encoded >>= 7;
    }
    w->data[w->size++] = (char)encoded;
    return 0;
}

static int
put_long_object(Writer *w, PyObject *value)
{
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "expected an int, got %s", Py_TYPE(value)->tp_name);
        return -1;
    }
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_ValueError, "the value does not fit a long");
        return -1;
    }
    if (n == -1 && PyErr_Occurred())
        return -1;
    return put_long(w, (int64_t)n);
}

static int
put_string(Writer *w, PyObject *value)
{
    if (!PyUnicode_Check(value)) {
        PyErr_Format(PyExc_TypeError, "expected a str, got %s", Py_TYPE(value)->tp_name);
        return -1;
    }
    Py_ssize_t size;
    const char *utf8 = PyUnicode_AsUTF8AndSize(value, &size);
    if (utf8 == NULL || put_long(w, (int64_t)size) < 0 || reserve(w, size) < 0)
        return -1;
    memcpy(w->data + w->size, utf8, (size_t)size);
    w->size += size;
    return 0;
}

static int
put_double(Writer *w, PyObject *value)
{
    /* What a float-typed mypyc argument takes: a float or an int (not a Decimal). */
    if (!PyFloat_Check(value) && !PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "expected a float, got %s", Py_TYPE(value)->tp_name);
        return -1;
    }
    double d = PyFloat_AsDouble(value);
    if (d == -1.0 && PyErr_Occurred())
        return -1;
    if (reserve(w, 8) < 0 || PyFloat_Pack8(d, w->data + w->size, 1) < 0)
        return -1;
    w->size += 8;
    return 0;
}

static int
put_map(Writer *w, PyObject *items, int of_double)
{
    if (!PyDict_Check(items)) {
        PyErr_Format(PyExc_TypeError, "expected a dict, got %s", Py_TYPE(items)->tp_name);
        return -1;
    }
    if (PyDict_GET_SIZE(items) > 0) {
        PyObject *key, *value;
        Py_ssize_t at = 0;
        if (put_long(w, (int64_t)PyDict_GET_SIZE(items)) < 0)
            return -1;
        while (PyDict_Next(items, &at, &key, &value)) {
            if (put_string(w, key) < 0)
                return -1;
            if ((of_double ? put_double(w, value) : put_string(w, value)) < 0)
                return -1;
        }
    }
    return put_byte(w, 0);
}

static int
put_array_of_double(Writer *w, PyObject *items)
{
    if (!PyList_Check(items)) {
        PyErr_Format(PyExc_TypeError, "expected a list, got %s", Py_TYPE(items)->tp_name);
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(items);
    if (count > 0) {
        if (put_long(w, (int64_t)count) < 0)
            return -1;
        /* By index: the list cannot change under us, no Python code runs here. */
        for (Py_ssize_t i = 0; i < count; i++) {
            if (put_double(w, PyList_GET_ITEM(items, i)) < 0)
                return -1;
        }
    }
    return put_byte(w, 0);
}

static int
put_field(Writer *w, long kind, PyObject *value, PyObject *symbol_index)
{
    switch (kind) {
    case STRING:
        return put_string(w, value);
    case LONG:
        return put_long_object(w, value);
    case DOUBLE:
        return put_double(w, value);
    case ENUM: {
        if (!PyDict_Check(symbol_index)) {
            PyErr_SetString(PyExc_TypeError, "an enum field's symbol index is a dict");
            return -1;
        }
        PyObject *index = PyDict_GetItemWithError(symbol_index, value);
        if (index == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, value);
            return -1;
        }
        return put_long_object(w, index);
    }
    case MAP_OF_DOUBLE:
        return put_map(w, value, 1);
    case MAP_OF_STRING:
        return put_map(w, value, 0);
    case ARRAY_OF_DOUBLE:
        return put_array_of_double(w, value);
    case BOOLEAN:
        if (!PyBool_Check(value)) {
            PyErr_Format(PyExc_TypeError, "expected a bool, got %s", Py_TYPE(value)->tp_name);
            return -1;
        }
        return put_byte(w, value == Py_True ? 1 : 0);
    default:
        PyErr_Format(PyExc_ValueError, "unknown field kind %ld", kind);
        return -1;
    }
}

/* `header` and the body of the fields of `source`: a dict's items, or (by_attribute) an
 * object's attributes. */
static PyObject *
write_fields(PyObject *source, PyObject *plan_object, PyObject *header, int by_attribute)
{
    PyObject *out = NULL;
    Writer w;
    w.data = w.inline_buffer;
    w.size = 0;
    w.capacity = (Py_ssize_t)sizeof(w.inline_buffer);
    Plan plan;
    if (plan_of(plan_object, &plan, 1) < 0)
        goto done;
    if (reserve(&w, PyBytes_GET_SIZE(header)) < 0)
        goto done;
    memcpy(w.data, PyBytes_AS_STRING(header), (size_t)PyBytes_GET_SIZE(header));
    w.size = PyBytes_GET_SIZE(header);
    for (Py_ssize_t i = 0; i < plan.count; i++) {
        PyObject *name = PyList_GET_ITEM(plan.names, i);
        long kind = PyLong_AsLong(PyList_GET_ITEM(plan.kinds, i));
        PyObject *value;
        if (kind == -1 && PyErr_Occurred())
            goto done;
        if (by_attribute) {
            value = PyObject_GetAttr(source, name); /* a new reference */
            if (value == NULL)
                goto done;
        } else {
            value = PyDict_GetItemWithError(source, name);
            if (value == NULL) {
                if (!PyErr_Occurred())
                    PyErr_SetObject(PyExc_KeyError, name);
                goto done;
            }
            /* Borrowed from the dict: hold it while its items are written. */
            Py_INCREF(value);
        }
        int written = 0;
        if (kind >= OPTIONAL) {
            if (value == Py_None) {
                written = put_byte(&w, 0);
                Py_DECREF(value);
                if (written < 0)
                    goto done;
                continue;
            }
            written = put_byte(&w, 2); /* branch 1, zigzag-encoded */
            kind -= OPTIONAL;
        }
        if (written == 0)
            written = put_field(&w, kind, value, PyList_GET_ITEM(plan.symbols, i));
        Py_DECREF(value);
        if (written < 0)
            goto done;
    }
    out = PyBytes_FromStringAndSize(w.data, w.size);
done:
    plan_release(&plan);
    if (w.data != w.inline_buffer)
        PyMem_Free(w.data);
    return out;
}

/* write(record: dict, plan: FlatPlan, header: bytes) -> bytes: `header` and the body of
 * `record` (a dict holding every field of the plan). */
static PyObject *
flat_write(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "write(record: dict, plan, header: bytes)");
        return NULL;
    }
    return write_fields(args[0], args[1], args[2], 0);
}

/* write_attributes(obj, plan: FlatPlan, header: bytes) -> bytes: as `write`, reading each
 * field of the plan as an attribute of `obj` (a flat dataclass: no dict built per event). */
static PyObject *
flat_write_attributes(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "write_attributes(obj, plan, header: bytes)");
        return NULL;
    }
    return write_fields(args[0], args[1], args[2], 1);
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))flat_read, METH_FASTCALL,
     "read(data, pos, plan) -> dict: the flat record whose body fills data from pos."},
    {"read_object", (PyCFunction)(void (*)(void))flat_read_object, METH_FASTCALL,
     "read_object(data, pos, plan, target) -> object: as read, into a new target.cls."},
    {"write", (PyCFunction)(void (*)(void))flat_write, METH_FASTCALL,
     "write(record, plan, header) -> bytes: header and the body of record."},
    {"write_attributes", (PyCFunction)(void (*)(void))flat_write_attributes, METH_FASTCALL,
     "write_attributes(obj, plan, header) -> bytes: as write, fields read as attributes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "flat_avro",
    "Avro bodies of flat records, read and written in C (see schemas/native_codec.py).", -1,
    methods,
};

PyMODINIT_FUNC
PyInit_flat_avro(void)
{
    str_names = PyUnicode_InternFromString("names");
    str_kinds = PyUnicode_InternFromString("kinds");
    str_symbols = PyUnicode_InternFromString("symbols");
    str_symbol_index = PyUnicode_InternFromString("symbol_index");
    str_cls = PyUnicode_InternFromString("cls");
    str_slots = PyUnicode_InternFromString("slots");
    str_enums = PyUnicode_InternFromString("enums");
    empty_tuple = PyTuple_New(0);
    if (str_names == NULL || str_kinds == NULL || str_symbols == NULL || str_symbol_index == NULL ||
        str_cls == NULL || str_slots == NULL || str_enums == NULL || empty_tuple == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
