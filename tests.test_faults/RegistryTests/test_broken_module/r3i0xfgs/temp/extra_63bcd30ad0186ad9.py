raise RuntimeError('line one\nline two')
