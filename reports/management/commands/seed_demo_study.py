from django.core.management.base import BaseCommand

from reports.demo import DEMO_READERS
from reports.results import reader_study_results


class Command(BaseCommand):
    help = (
        "Create a demo reader study (melanoma or not) on generated demo cases with simulated readings of "
        "the demo readers and simulated model outputs, so the results page has something to show."
    )

    def add_arguments(self, parser):
        parser.add_argument("--cases", type=int, default=60)
        parser.add_argument("--seed", type=int, default=7)

    def handle(self, *args, cases, seed, **options):
        from annotation.demo import demo_password
        from reports.demo import seed_demo_study

        study = seed_demo_study(n_cases=cases, seed=seed)
        res = reader_study_results(study=study)
        m = res["tasks"][0]["mrmc"] if res["tasks"] else None
        self.stdout.write(f"Study {study.pk}: {study.title} — {res['n_cases']} cases, {res['n_readers']} readers")
        if m:
            self.stdout.write(
                f"  readers' mean AUC {m['reader_mean_auc']:.3f} vs model {m['model_auc']:.3f}: "
                f"difference {m['estimate']:+.3f} (95% CI {m['ci'][0]:+.3f} to {m['ci'][1]:+.3f}), p = {m['p_value']:.3g}"
            )
        self.stdout.write(f"  results: /studies/{study.pk}/results/ (log in as coord / {demo_password('coord')})")
        self.stdout.write("  readers reader1 and reader2 have not read yet: log in as them to try the reading pages.")
        for username, *_ in DEMO_READERS:
            self.stdout.write(f"  {username:8s} / {demo_password(username)}")
