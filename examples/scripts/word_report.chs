# Text processing with dicts, sorting and str.format: a word-frequency report.
#
#     chunkheap run examples/scripts/word_report.chs 5

TEXT = """
It was the best of times, it was the worst of times, it was the age of wisdom,
it was the age of foolishness, it was the epoch of belief, it was the epoch of
incredulity, it was the season of Light, it was the season of Darkness.
"""


def words(text):
    out = []
    for raw in text.split():
        w = raw.strip(".,;:!?").lower()
        if w:
            out.append(w)
    return out


def count(ws):
    freq = {}
    for w in ws:
        freq[w] = freq.get(w, 0) + 1
    return freq


def by_count_then_word(item):
    word, n = item
    return (-n, word)


limit = int(sys.argv[1]) if len(sys.argv) > 1 else 8
ws = words(TEXT)
freq = count(ws)
print("{} words, {} distinct".format(len(ws), len(freq)))
ranked = sorted(freq.items(), key=by_count_then_word)
width = 0
for w, n in ranked[:limit]:
    width = max(width, len(w))
for rank, (w, n) in enumerate(ranked[:limit], start=1):
    print("{:>2}. {} {:>3} {}".format(rank, w + " " * (width - len(w)), n, "#" * n))

lengths = {}
for w in freq:
    key = str(len(w))
    lengths[key] = lengths.get(key, 0) + 1
print("distinct words by length:", sorted(lengths.items(), key=by_count_then_word)[:4])
