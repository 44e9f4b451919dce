"""The results tables and the figures and pages of ``snakemake --report``, in three steps, each its own module:

    records   what everything is made from: results-table rows, run directories, a dataset's coverage and failed media
    tables    the results tables (csv and markdown) and their layout
    svg, figures   the figures (SVG written here, no plotting library)
    pages     the HTML pages, rendered from the records
    files     all of it into the report's folders (``avzsl report-files``)
"""
