"""Reports: results side by side (`compare`), the HTML report with its galleries, and their pictures."""
